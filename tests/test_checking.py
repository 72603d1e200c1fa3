"""check, hint and progress: feedback in notebooks that never raises."""

from __future__ import annotations

import json
import re

import pytest

from backprop_course import check, evaluate, hint, progress
from backprop_course.checking import CORRECT, NOT_ATTEMPTED, UNKNOWN, WRONG, ProgressReport
from backprop_course.progress import ProgressStore
from backprop_course.settings import progress_path


def good_central(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


def test_correct_answer(home):
    """A correct answer passes with full points."""
    result = evaluate("01.central_difference", good_central)
    assert result.status == CORRECT and result.points == result.max_points == 2


def test_stub_is_not_attempted(home):
    """The release stub is reported as not attempted, with zero points."""
    result = evaluate("01.central_difference", lambda f, x, h: ...)
    assert result.status == NOT_ATTEMPTED and result.points == 0
    assert evaluate("00.slope", ...).status == NOT_ATTEMPTED


def test_wrong_answer_names_the_mistake(home):
    """Dividing by h instead of 2h is named, not just called incorrect."""
    result = evaluate("01.central_difference", lambda f, x, h: (f(x + h) - f(x - h)) / h)
    assert result.status == WRONG
    assert "2h apart" in result.message and "for f=" in result.message


@pytest.mark.parametrize(
    "answer",
    [None, "text", 3, [1, 2], {"a": 1}, lambda: 1, lambda f, x, h: 1 / 0, object()],
)
def test_check_never_raises(home, answer, capsys):
    """Whatever the answer, check prints a result instead of raising."""
    for exercise_id in (
        "00.slope",
        "00.mean",
        "01.central_difference",
        "01.gradient",
        "01.best_step",
        "01.error_curve",
    ):
        check(exercise_id, answer)
    out = capsys.readouterr().out
    assert "Traceback" not in out
    assert "FAIL" in out or "NOT ATTEMPTED" in out


def test_infinite_recursion_is_reported(home):
    """An answer that recurses forever is reported, not raised."""

    def forever(f, x, h):
        return forever(f, x, h)

    result = evaluate("01.central_difference", forever)
    assert result.status == WRONG and "Recursion" in result.message


def test_unknown_exercise_suggests_close_ids(home):
    """A misspelled id says which ids are close."""
    result = evaluate("01.central_diference", good_central)
    assert result.status == UNKNOWN and "01.central_difference" in result.message


def test_seed_makes_feedback_reproducible(home):
    """The same seed draws the same test inputs (the grader relies on it)."""
    bad = lambda f, x, h: (f(x + h) - f(x)) / h  # noqa: E731
    first = evaluate("01.central_difference", bad, seed=7).message
    assert evaluate("01.central_difference", bad, seed=7).message == first


def test_fresh_inputs_each_call(home):
    """Without a seed, each check draws new inputs."""
    bad = lambda f, x, h: 0.0  # noqa: E731
    messages = {evaluate("01.central_difference", bad).message for _ in range(5)}
    assert len(messages) > 1


def test_html_and_text_rendering(home):
    """Results render as HTML for Jupyter and as text for a terminal."""
    result = evaluate("00.slope", 1 / 3)
    html, text = result._repr_html_(), str(result)
    assert "FAIL" in html and "run over rise" in html and "<details" in html
    assert text.startswith("✘ FAIL  00.slope") and "hint('00.slope')" in text
    assert "<" not in text


def test_html_escapes_learner_values(home):
    """Text from an answer cannot inject HTML into the feedback."""
    result = evaluate(
        "01.error_curve",
        {"small_h_error": "<script>", "large_h_error": "x", "forward_slope": 1, "central_slope": 2},
    )
    assert "<script>" not in result._repr_html_() and "&lt;script&gt;" in result._repr_html_()


def test_check_records_progress(home, capsys):
    """A pass is recorded; a later failure does not undo it; stubs are not attempts."""
    check("00.slope", ...)
    assert not progress_path().exists()
    check("00.slope", 2.0)
    check("00.slope", 3.0)
    check("00.slope", 2.0)
    record = ProgressStore.default().entry("00.slope")
    assert record["passed"] is True and record["points"] == 1 and record["attempts"] == 3


def test_no_record_mode(home, monkeypatch, capsys):
    """With BACKPROP_COURSE_NO_RECORD=1 (the grader) nothing is written."""
    monkeypatch.setenv("BACKPROP_COURSE_NO_RECORD", "1")
    check("00.slope", 3.0)
    assert not progress_path().exists()


def test_in_a_grading_kernel_check_leaves_the_judging_to_the_grader(home, monkeypatch, capsys):
    """In a kernel the grader runs (BACKPROP_COURSE_GRADING=1), check() evaluates nothing
    (the grader checks each answer itself, on hidden inputs): it says so and never raises."""
    monkeypatch.setenv("BACKPROP_COURSE_GRADING", "1")
    monkeypatch.setenv("BACKPROP_COURSE_CHECK_LOG", str(home / "log.jsonl"))

    def answer(*args):
        raise AssertionError("check() must not call the answer here")

    check("01.central_difference", answer)
    check(object(), answer)
    progress()
    out = capsys.readouterr().out
    assert "progress(): not shown here" in out
    assert "check('01.central_difference', ...): not run here" in out
    assert "the grader checks this answer itself" in out
    assert not (home / "log.jsonl").exists() and not progress_path().exists()


def test_hints_are_progressive(home, capsys):
    """Each hint() call reveals the next hint, then stays on the last."""
    for _ in range(4):
        hint("01.gradient")
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "Hint 1/3 for 01.gradient",
        "Hint 2/3 for 01.gradient",
        "Hint 3/3 for 01.gradient",
        "Hint 3/3 for 01.gradient",
    ]
    assert "last hint" in lines[-1]
    assert ProgressStore.default().hints_shown("01.gradient") == 3


def test_hints_restart_at_one_in_a_new_kernel_session(home, monkeypatch, capsys):
    """A restarted kernel shows hint 1 again (and check() offers hint 1); passes persist."""
    from backprop_course import checking

    shown = []
    monkeypatch.setattr(checking, "_show", shown.append)
    hint("00.mean")
    hint("00.mean")
    check("00.slope", 3.0)
    assert shown[1].number == 2
    # What a kernel restart does: a new process, with nothing revealed in memory.
    monkeypatch.setattr(checking, "_SESSION_HINTS", {})
    check("00.mean", None)
    assert shown[-1].hint_number == 1
    hint("00.mean")
    assert shown[-1].number == 1 and shown[-1].text == exercises_hints("00.mean")[0]
    assert ProgressStore.default().entry("00.slope")["passed"] is True
    assert ProgressStore.default().hints_shown("00.mean") == 2  # the furthest hint seen


def exercises_hints(exercise_id):
    from backprop_course import exercises

    return exercises.get(exercise_id).hints


def test_check_in_a_course_folder_records_there(tmp_path, monkeypatch, capsys):
    """check() in a folder made by start records there; elsewhere in ~/.backprop_course."""
    from backprop_course import settings

    monkeypatch.delenv(settings.HOME_VARIABLE)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    course = tmp_path / "course"
    (course / settings.STATE_FOLDER).mkdir(parents=True)
    (course / settings.STATE_FOLDER / settings.COURSE_MARKER).write_text("{}")
    (course / "exercises").mkdir()
    monkeypatch.chdir(course / "exercises")  # a kernel runs in its notebook's folder
    check("00.slope", 3.0)
    store = course / settings.STATE_FOLDER / "progress.json"
    assert json.loads(store.read_text())["exercises"]["00.slope"]["passed"] is True
    assert not (tmp_path / "user" / ".backprop_course").exists()
    monkeypatch.chdir(tmp_path)
    check("00.mean", ...)
    check("00.slope", 1.0)
    user = tmp_path / "user" / ".backprop_course" / "progress.json"
    assert json.loads(user.read_text())["exercises"]["00.slope"]["passed"] is False


def test_hint_for_unknown_id(home, capsys):
    """hint() with a wrong id explains instead of raising."""
    hint("99.nothing")
    assert "no exercise with id '99.nothing'" in capsys.readouterr().out


def test_progress_table(home, capsys):
    """progress() lists every lesson; an empty store says how to start."""
    progress()
    out = capsys.readouterr().out
    assert "00" in out and "01" in out and "0/14" in out and "open exercises/00_welcome" in out
    check("01.central_difference", good_central)
    report = ProgressReport.collect()
    assert ("01", 1, 7, 2, 14) in report.rows and report.started
    assert "<table>" in report._repr_html_()


def test_damaged_progress_file_is_set_aside(home, capsys):
    """A corrupt store is moved aside with a warning; checking still works."""
    home.mkdir(parents=True)
    progress_path().write_text("{not json")
    with pytest.warns(UserWarning, match="damaged"):
        check("00.slope", 3.0)
    assert json.loads(progress_path().read_text())["exercises"]["00.slope"]["passed"]
    assert list(home.glob("progress.damaged-*.json"))


def test_unwritable_store_does_not_break_check(home, monkeypatch, capsys):
    """If the store cannot be written, check still shows the result."""

    def fail(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(ProgressStore, "save", fail)
    check("00.slope", 3.0)
    out = capsys.readouterr().out
    assert "PASS" in out and "progress not saved" in out


@pytest.mark.parametrize(
    ("answer", "css", "label"),
    [(3.0, "bpc-pass", "✔ PASS"), (1 / 3, "bpc-fail", "✘ FAIL"), (..., "bpc-not-attempted", "…")],
)
def test_html_feedback_reads_without_colour(home, answer, css, label):
    """The verdict is a word and a symbol, with stable CSS classes for styles and tests."""
    shown = evaluate("00.slope", answer)._repr_html_()
    assert f"class='bpc-check {css}'" in shown and label in shown
    assert ("<details" in shown) == (css != "bpc-pass")  # a hint only when not passed


def test_html_feedback_hint_is_collapsed_and_numbered(home):
    """A failed check offers its first hint folded away, numbered out of all hints."""
    from backprop_course import exercises

    shown = evaluate("01.gradient", None)._repr_html_()
    total = len(exercises.get("01.gradient").hints)
    assert "<details class='bpc-next-hint'" in shown and "<details open" not in shown
    assert f"Show hint 1 of {total}" in shown and "hint(&#x27;01.gradient&#x27;)" in shown


def test_check_offers_the_hint_after_those_revealed(home, monkeypatch, capsys):
    """After two hint() calls, check() folds in hint 3, not hint 1 again."""
    from backprop_course import checking, exercises

    shown = []
    monkeypatch.setattr(checking, "_show", shown.append)
    hint("01.gradient")
    hint("01.gradient")
    check("01.gradient", None)
    result = shown[-1]
    assert result.hint_number == 3 and result.next_hint == exercises.get("01.gradient").hints[2]
    assert "Show hint 3 of 3" in result._repr_html_()


def test_unknown_exercise_html(home):
    """An unknown id renders with its own class and label, and no hint."""
    shown = evaluate("99.nope", 1)._repr_html_()
    assert "bpc-unknown" in shown and "UNKNOWN EXERCISE" in shown and "<details" not in shown


def test_progress_html_lists_every_lesson_and_how_to_start(home):
    """The notebook table has a row per lesson with points possible, a total, and, while
    nothing is passed, how to start."""
    from backprop_course import exercises

    empty = ProgressReport.collect()._repr_html_()
    assert "class='bpc-progress'" in empty and "points possible" in empty
    for lesson in exercises.lessons():
        assert re.search(f">{lesson}[ <]", empty), lesson
    assert ">total<" in empty and "<code>backprop-course start</code>" in empty
    ProgressStore.default().record_attempt("00.slope", passed=True, points=1)
    started = ProgressReport.collect()._repr_html_()
    assert "bpc-progress-empty" not in started and "<progress value='1' max='2'>" in started
