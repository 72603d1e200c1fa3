"""Where the course's notebooks are, and copying them into a learner's folder.

From a clone (or an editable install) the notebooks are the repository's
``notebooks/``, ``exercises/`` and ``solutions/``. An installed wheel carries
copies inside the package, under ``backprop_course/_course/``.

:func:`copy_course` never overwrites a notebook the learner has changed: it
remembers what it copied (a manifest of hashes) and, when the release changed
under an edited notebook, writes the new release beside it as
``NN_topic.new.ipynb``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CopyReport", "Lesson", "copy_course", "course_root", "lessons"]

PARTS = ("notebooks", "exercises", "solutions")
MANIFEST = ".backprop_course_manifest.json"
_PACKAGE = Path(__file__).resolve().parent


def course_root() -> Path:
    """The folder that holds ``notebooks/``, ``exercises/`` and ``solutions/``."""
    bundled = _PACKAGE / "_course"
    if (bundled / "notebooks").is_dir():
        return bundled
    clone = _PACKAGE.parent
    if (clone / "notebooks").is_dir() and (clone / "pyproject.toml").is_file():
        return clone
    raise FileNotFoundError(
        f"the course notebooks were not found: looked in {bundled} (installed wheel) and "
        f"{clone} (a clone). Reinstall the package: pip install backprop-course"
    )


@dataclass(frozen=True)
class Lesson:
    """One lesson: its number, stem and which of its notebooks exist."""

    number: str
    stem: str
    parts: tuple[str, ...]


def lessons(root: Path | None = None) -> list[Lesson]:
    """Every lesson found in the course folder, in order."""
    root = root or course_root()
    stems: dict[str, list[str]] = {}
    for part in PARTS:
        for path in sorted((root / part).glob("[0-9][0-9]_*.ipynb")):
            stems.setdefault(path.stem, []).append(part)
    return [Lesson(stem[:2], stem, tuple(parts)) for stem, parts in sorted(stems.items())]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class CopyReport:
    """What :func:`copy_course` did, file by file (paths relative to the target)."""

    copied: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept_with_new_beside: list[str] = field(default_factory=list)


def copy_course(
    target: Path, *, with_solutions: bool = False, root: Path | None = None
) -> CopyReport:
    """Copy lessons and exercises (and solutions, if asked) into ``target``.

    A file the learner never changed is updated to the current release; a
    changed one is kept, with the current release written beside it.
    """
    root = root or course_root()
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    manifest_path = target / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        manifest = {}
    report = CopyReport()
    parts = PARTS if with_solutions else PARTS[:2]
    for part in parts:
        for source in sorted((root / part).glob("*.ipynb")):
            relative = f"{part}/{source.name}"
            destination = target / part / source.name
            destination.parent.mkdir(parents=True, exist_ok=True)
            new_digest = _digest(source)
            if not destination.exists():
                shutil.copyfile(source, destination)
                report.copied.append(relative)
            elif _digest(destination) == new_digest:
                report.unchanged.append(relative)
            elif _digest(destination) == manifest.get(relative):
                shutil.copyfile(source, destination)  # untouched by the learner: update
                report.updated.append(relative)
            else:
                beside = destination.with_suffix(".new.ipynb")
                shutil.copyfile(source, beside)
                report.kept_with_new_beside.append(relative)
                continue  # the manifest keeps the digest of what the learner started from
            manifest[relative] = new_digest
    manifest_path.write_text(
        json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return report
