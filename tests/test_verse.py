"""The verse rule, the syllable counter and the verse metrics of lesson 13."""

from __future__ import annotations

import math

import pytest

from backprop_course import verse

SPEECHES = """ROMEO:
But soft, what light through yonder window breaks?
It is the east, and Juliet is the sun.

First Citizen:
We are accounted poor citizens, the patricians good. What
authority surfeits on would relieve us: if they
would yield us but the superfluity.

All:
Speak, speak.
"""


@pytest.mark.parametrize(
    ("word", "count"),
    [("the", 1), ("fire", 1), ("mile", 1), ("table", 2), ("agree", 2), ("Juliet", 2), ("o'er", 1)],
)
def test_count_syllables(word, count):
    """Vowel groups, a silent final e, a sounded consonant+le, at least one per word."""
    assert verse.count_syllables(word) == count


def test_verse_rule_keeps_capitalised_short_lines_only():
    """Verse speeches are kept without speaker names; wrapped prose and one-liners are not."""
    kept = verse.extract_verse(SPEECHES)
    assert kept.startswith("But soft") and "Juliet is the sun." in kept
    assert "patricians" not in kept and "Speak" not in kept and "ROMEO" not in kept


def test_pentameter_line_counts_ten():
    """A regular pentameter line has 10 syllables by the counter."""
    assert verse.line_syllables("It is the east, and Juliet is the sun.") == 10


def test_metrics_of_verse_and_of_noise():
    """Verse scores near 10 syllables with real words; gibberish scores far from it."""
    known = verse.vocabulary(SPEECHES)
    good = verse.verse_metrics(verse.extract_verse(SPEECHES), known, drop_last=False)
    assert good.lines == 2 and good.real_words == 1.0 and abs(good.syllables_mean - 10) <= 1
    bad = verse.verse_metrics("xq zzk\nbrrt\n", known, drop_last=False)
    assert bad.real_words == 0.0 and bad.syllables_error > 5
    empty = verse.verse_metrics("", known)
    assert empty.lines == 0 and math.isnan(empty.syllables_mean)


def test_drop_last_leaves_out_a_cut_line():
    """A sample that stops mid-line is measured without its last, unfinished line."""
    known = {"a"}
    assert verse.verse_metrics("a a\na a\na", known).lines == 2
    assert verse.verse_metrics("a a\na a\na\n", known).lines == 3


def test_line_lengths_are_per_line():
    """line_lengths gives one syllable count and one character count per measured line."""
    lines = verse.measured_lines("to be or not\nthe sun\ncut sho", drop_last=True)
    syllables, chars = verse.line_lengths(lines)
    assert lines == ["to be or not", "the sun"]
    assert syllables.tolist() == [4.0, 2.0] and chars.tolist() == [12.0, 7.0]
