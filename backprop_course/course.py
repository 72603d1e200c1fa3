"""Where the course's notebooks are, and copying them into a learner's course folder.

From a clone (or an editable install) the notebooks are the repository's
``notebooks/``, ``exercises/`` and ``solutions/``. An installed wheel carries
copies inside the package, under ``backprop_course/_course/``.

:func:`copy_course` makes (or updates) a course folder and never overwrites a
notebook the learner has changed. "Changed" means what a learner can change: the
cells, their types and sources. Outputs, execution counts, cell ids and every
metadata field are ignored, because JupyterLab rewrites them when it merely opens,
runs or autosaves a notebook (kernelspec display name, language_info, widget
state). The folder's ``.backprop_course/manifest.json`` remembers the cells of the
release each notebook was copied from; a newer release is written beside an edited
notebook, as ``NN_topic.new.ipynb``, only when the release itself changed, and the
report says which cells changed.

The folder is marked as a course folder (``.backprop_course/course.json``), so that
``check()`` keeps progress there (see :mod:`backprop_course.settings`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from backprop_course import settings

__all__ = [
    "CopyReport",
    "Lesson",
    "cell_fingerprints",
    "copy_course",
    "course_root",
    "describe_change",
    "lessons",
    "mark_course_folder",
]

PARTS = ("notebooks", "exercises", "solutions")
MANIFEST = "manifest.json"  # inside the folder's .backprop_course/
LEGACY_MANIFEST = ".backprop_course_manifest.json"  # older starts: byte digests, in the folder
MANIFEST_FORMAT = 2
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
        f"{clone} (a clone). Install the course from a clone (pip install -e .) or from a "
        "wheel built from one (pip wheel --no-deps -w dist . && pip install dist/*.whl)"
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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cell_fingerprints(path: Path) -> list[str]:
    """One digest per cell of the notebook at ``path``: its type, source and attachments.

    Everything else (outputs, execution counts, ids, metadata) is left out. A file that
    is not a readable notebook gets a single digest of its bytes.
    """
    import nbformat

    data = Path(path).read_bytes()
    try:
        with warnings.catch_warnings():  # old or id-less notebooks warn; they still count
            warnings.simplefilter("ignore")
            notebook = nbformat.reads(data.decode("utf-8"), as_version=4)
        cells = [
            json.dumps([cell.cell_type, cell.source, cell.get("attachments") or {}], sort_keys=True)
            for cell in notebook.cells
        ]
    except Exception:  # not JSON, not a notebook, not UTF-8: compare the bytes
        return [f"bytes:{_sha256(data)}"]
    return [_sha256(cell.encode("utf-8")) for cell in cells]


def describe_change(old: list[str] | None, new: list[str]) -> str:
    """What changed between two lists of cell fingerprints, in words ("2 cells changed")."""
    if old is None:
        return "the release differs from your copy"
    if any(digest.startswith("bytes:") for digest in (*old, *new)):
        return "the file changed"
    counts = {"changed": 0, "added": 0, "removed": 0}
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new).get_opcodes():
        if tag == "replace":
            common = min(i2 - i1, j2 - j1)
            counts["changed"] += common
            counts["removed"] += i2 - i1 - common
            counts["added"] += j2 - j1 - common
        elif tag == "delete":
            counts["removed"] += i2 - i1
        elif tag == "insert":
            counts["added"] += j2 - j1
    words = [f"{n} cell{'s' if n != 1 else ''} {what}" for what, n in counts.items() if n]
    return ", ".join(words) or "only the order of cells changed"


@dataclass
class CopyReport:
    """What :func:`copy_course` did, file by file (paths relative to the target)."""

    copied: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # the learner had not edited them
    unchanged: list[str] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)  # kept; the release has not changed
    kept_with_new_beside: list[str] = field(default_factory=list)  # kept; release beside
    changes: dict[str, str] = field(default_factory=dict)  # path: what the release changed
    stale_removed: list[str] = field(default_factory=list)  # .new.ipynb equal to the release
    progress_copied_from: Path | None = None


def mark_course_folder(target: Path) -> Path:
    """Mark ``target`` as a course folder (``.backprop_course/course.json``); return the state
    folder. check() run inside the folder then keeps progress there."""
    from backprop_course import __version__

    state = Path(target) / settings.STATE_FOLDER
    state.mkdir(parents=True, exist_ok=True)
    marker = state / settings.COURSE_MARKER
    if not marker.exists():
        marker.write_text(
            json.dumps(
                {
                    "about": "a backprop-course folder made by `backprop-course start`; "
                    "progress.json beside this file is the progress made in it",
                    "created_by_version": __version__,
                },
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )
    return state


def _load_manifest(target: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The cells each notebook was copied from, and byte digests from a pre-0.2 manifest."""
    try:
        data = json.loads((target / settings.STATE_FOLDER / MANIFEST).read_text("utf-8"))
        if data.get("format") == MANIFEST_FORMAT:
            return dict(data.get("files", {})), {}
    except (OSError, ValueError, AttributeError):
        pass
    try:
        legacy = json.loads((target / LEGACY_MANIFEST).read_text(encoding="utf-8"))
        return {}, {k: v for k, v in legacy.items() if isinstance(v, str)}
    except (OSError, ValueError, AttributeError):
        return {}, {}


def _base(
    relative: str, destination: Path, source: Path, manifest: dict, legacy: dict
) -> list[str] | None:
    """The cells of the release the learner's copy started from (None: unknown)."""
    if relative in manifest:
        return list(manifest[relative])
    old = legacy.get(relative)
    if old is None:
        return None
    if _sha256(destination.read_bytes()) == old:  # still exactly what was copied
        return cell_fingerprints(destination)
    if _sha256(source.read_bytes()) == old:  # the release has not changed since
        return cell_fingerprints(source)
    return None


def copy_course(
    target: Path, *, with_solutions: bool = False, root: Path | None = None
) -> CopyReport:
    """Copy lessons and exercises (and solutions, if asked) into the course folder ``target``.

    A notebook the learner never edited is updated to the current release; an edited
    one is kept, with the current release written beside it when that release changed.
    """
    root = root or course_root()
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    report = CopyReport()
    state = target / settings.STATE_FOLDER
    existed = (target / LEGACY_MANIFEST).exists() and not state.exists()
    state = mark_course_folder(target)
    if existed:  # a folder from before per-folder progress: bring the learner's points along
        report.progress_copied_from = _adopt_user_progress(state)
    manifest, legacy = _load_manifest(target)
    parts = PARTS if with_solutions else PARTS[:2]
    for part in parts:
        for source in sorted((root / part).glob("*.ipynb")):
            if source.name.endswith(".new.ipynb"):
                continue
            relative = f"{part}/{source.name}"
            destination = target / part / source.name
            beside = destination.with_suffix(".new.ipynb")
            destination.parent.mkdir(parents=True, exist_ok=True)
            release = cell_fingerprints(source)
            if not destination.exists():
                shutil.copyfile(source, destination)
                report.copied.append(relative)
                manifest[relative] = release
                continue
            mine = cell_fingerprints(destination)
            base = _base(relative, destination, source, manifest, legacy)
            if mine == release:  # at most outputs or metadata differ: nothing to do
                report.unchanged.append(relative)
                manifest[relative] = release
                if beside.exists() and beside.read_bytes() == source.read_bytes():
                    beside.unlink()  # a copy an older `start` wrote for autosave noise
                    report.stale_removed.append(f"{part}/{beside.name}")
            elif mine == base:  # the learner has not edited it: take the new release
                shutil.copyfile(source, destination)
                report.updated.append(relative)
                report.changes[relative] = describe_change(base, release)
                manifest[relative] = release
            elif base == release:  # edited, and the release is what they started from
                report.edited.append(relative)
            else:  # edited, and the release changed: put the release beside it
                if not (beside.exists() and beside.read_bytes() == source.read_bytes()):
                    shutil.copyfile(source, beside)
                report.kept_with_new_beside.append(relative)
                report.changes[relative] = describe_change(base, release)
                if base is not None:
                    manifest[relative] = base  # still what the learner started from
    (state / MANIFEST).write_text(
        json.dumps({"format": MANIFEST_FORMAT, "files": manifest}, indent=1, sort_keys=True) + "\n",
        encoding="utf-8",
    )
    (target / LEGACY_MANIFEST).unlink(missing_ok=True)
    return report


def _adopt_user_progress(state: Path) -> Path | None:
    """Copy the user store's progress into a course folder that predates per-folder stores."""
    user = settings.home_dir() / "progress.json"
    mine = state / "progress.json"
    if not user.is_file() or mine.exists():
        return None
    shutil.copyfile(user, mine)
    return user
