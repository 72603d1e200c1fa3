"""The learner's progress store: one small JSON file.

It records, per exercise, whether it has been passed, the points earned, how
many attempts were made and the furthest hint revealed. Writes are atomic
(write a temporary file, then rename), so a crash never leaves half a file; a
damaged file is set aside with a warning rather than stopping a notebook.

The file lives at :func:`backprop_course.settings.progress_path`: in the course
folder that ``backprop-course start`` made, else in the user store
(``~/.backprop_course/progress.json``, or ``$BACKPROP_COURSE_HOME/progress.json``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from backprop_course import settings

FORMAT_VERSION = 1


def _empty() -> dict:
    return {"version": FORMAT_VERSION, "exercises": {}}


@dataclass
class ProgressStore:
    """Read and update the progress file at ``path``."""

    path: Path

    @classmethod
    def default(cls) -> ProgressStore:
        return cls(settings.progress_path())

    def load(self) -> dict:
        """The whole store; an empty one if the file is missing or unreadable."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return _empty()
        except OSError as error:
            warnings.warn(f"could not read progress file {self.path}: {error}", stacklevel=2)
            return _empty()
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("exercises"), dict):
                raise ValueError("expected an object with an 'exercises' object")
        except ValueError as error:
            backup = self.path.with_suffix(f".damaged-{int(time.time())}.json")
            try:
                os.replace(self.path, backup)
                where = f"it was moved to {backup}"
            except OSError:
                where = "it was left in place"
            warnings.warn(
                f"the progress file {self.path} was damaged ({error}); {where} and a new one "
                "is started",
                stacklevel=2,
            )
            return _empty()
        return data

    def save(self, data: dict) -> None:
        """Write ``data`` atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".progress-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
                handle.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def entry(self, exercise_id: str) -> dict:
        """The record of one exercise (empty if never attempted)."""
        return dict(self.load()["exercises"].get(exercise_id, {}))

    def _update(self, exercise_id: str, change) -> dict:
        data = self.load()
        record = data["exercises"].setdefault(exercise_id, {})
        change(record)
        self.save(data)
        return record

    def record_attempt(self, exercise_id: str, *, passed: bool, points: float) -> dict:
        """Count one checked attempt; a pass is never undone by a later failure."""

        def change(record: dict) -> None:
            record["attempts"] = record.get("attempts", 0) + 1
            record["last_attempt"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            if passed:
                record["passed"] = True
                record["points"] = max(points, record.get("points", 0))
                record.setdefault("first_passed", record["last_attempt"])
            else:
                record.setdefault("passed", False)
                record.setdefault("points", 0)

        return self._update(exercise_id, change)

    def hints_shown(self, exercise_id: str) -> int:
        return int(self.entry(exercise_id).get("hints_shown", 0))

    def record_hint(self, exercise_id: str, number: int) -> int:
        """Note that hint ``number`` (1-based) was shown; keeps the furthest hint ever seen.

        Which hint comes next is counted per kernel session by ``hint()``, not here, so a
        restarted kernel begins again at hint 1.
        """

        def change(record: dict) -> None:
            record["hints_shown"] = max(record.get("hints_shown", 0), number)

        return int(self._update(exercise_id, change)["hints_shown"])

    def reset(self, exercise_id: str | None = None) -> None:
        """Forget one exercise, or everything."""
        data = self.load()
        if exercise_id is None:
            data = _empty()
        else:
            data["exercises"].pop(exercise_id, None)
        self.save(data)
