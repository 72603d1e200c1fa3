"""The exercise registry, and every exercise notebook scored end to end."""

from __future__ import annotations

import re

import nbformat
import pytest

from backprop_course import exercises
from backprop_course.course import lessons
from conftest import ROOT

CHECK_CALL = re.compile(r"""^check\(["'](?P<id>\d\d\.\w+)["'],\s*(?P<answer>\w+)\)\s*$""", re.M)
GRADED = sorted(p.stem for p in (ROOT / "solutions").glob("*.ipynb"))


def check_calls(path):
    nb = nbformat.read(path, as_version=4)
    return [
        (m["id"], m["answer"])
        for c in nb.cells
        if c.cell_type == "code"
        for m in CHECK_CALL.finditer(c.source)
    ]


def test_ids_are_unique_and_well_formed():
    """Every exercise has a unique NN.name id, positive points and hints."""
    items = list(exercises.all_exercises())
    assert len({e.id for e in items}) == len(items)
    for e in items:
        assert exercises.ID_PATTERN.match(e.id) and e.points > 0 and e.hints and e.title


def test_registering_a_duplicate_id_fails():
    """The registry refuses a second exercise with an existing id."""
    with pytest.raises(ValueError, match="registered twice"):
        exercises.exercise("00.slope", title="t", points=1, answer="a", hints=["h"])(print)


def test_bad_id_is_refused():
    """Ids must look like NN.snake_case."""
    with pytest.raises(ValueError, match=r"NN\.snake_case_name"):
        exercises.exercise("lesson1", title="t", points=1, answer="a", hints=["h"])


def test_each_lesson_has_enough_exercises():
    """Every graded lesson has a solutions notebook and at least four exercises (from 01 on)."""
    assert exercises.lessons() == [stem[:2] for stem in GRADED]
    for lesson in exercises.lessons():
        if lesson != "00":  # the welcome lesson has two warm-ups
            assert len(exercises.for_lesson(lesson)) >= 4, lesson


@pytest.mark.parametrize("stem", GRADED)
def test_notebook_checks_match_registry(stem):
    """The solution checks exactly its lesson's exercises, each bound to the registered name."""
    calls = check_calls(ROOT / "solutions" / f"{stem}.ipynb")
    registered = [(e.id, e.answer) for e in exercises.for_lesson(stem[:2])]
    assert calls == registered


def test_every_lesson_has_all_three_notebooks():
    """Lesson notebooks, solutions and exercises come in matching stems."""
    for lesson in lessons(ROOT):
        if lesson.number in exercises.lessons():
            assert lesson.parts == ("notebooks", "exercises", "solutions"), lesson
