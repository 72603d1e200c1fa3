"""Shakespeare's verse and how to measure it (lesson 13).

The bundled tiny-shakespeare text is a sequence of speeches: a line ``NAME:``
and then what the speaker says, speeches separated by a blank line. Much of it
is blank verse (iambic pentameter: ten syllables to a line, unrhymed), the rest
prose. Lesson 13 trains a GPT on the verse only and measures how the form of
its samples emerges, with three deliberately simple rules, stated here once.

**Which speeches are verse** (:func:`is_verse`). A speech counts as verse when

1. it has at least ``min_lines`` lines (2): one line says little about a form;
2. every line starts with a capital letter (after any opening quote or
   bracket): verse capitalises each line, prose only each sentence, so wrapped
   prose lines usually start in lower case;
3. every line is at most ``max_chars`` characters long (60): the printer wrapped
   prose at about 70 characters, while a pentameter line is around 40.

**Syllables** (:func:`count_syllables`). Lower-case the word, drop everything
but letters, count the groups of consecutive vowels (``a e i o u y``),
subtract one for a silent final ``e`` (a word ending in ``e``, with more than
one group, unless it ends in ``ee`` or in a consonant and ``le``), and count at
least one per word. "Shakespeare" gives 3, "fire" 1, "mile" 1, "table" 2. It is
wrong on some words (``-ed`` endings, ``ia``/``io`` pairs), the same way on the
training text and on the samples, so comparisons between them are fair.

**Real words** (:func:`real_word_share`): the share of a sample's words (letters
and apostrophes, lower case) that occur somewhere in the training verse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "VerseMetrics",
    "count_syllables",
    "extract_verse",
    "is_verse",
    "line_lengths",
    "line_syllables",
    "measured_lines",
    "poem_lines",
    "real_word_share",
    "speeches",
    "verse_metrics",
    "vocabulary",
    "words",
]

PENTAMETER = 10  # syllables in a line of iambic pentameter
_VOWEL_GROUPS = re.compile(r"[aeiouy]+")
_WORD = re.compile(r"[a-z']+")
_SPEAKER = re.compile(r"^[A-Za-z][A-Za-z .,'-]*:$")


def words(text: str) -> list[str]:
    """The words of ``text``: runs of letters and apostrophes, lower case, quotes stripped."""
    found = (w.strip("'") for w in _WORD.findall(text.lower()))
    return [w for w in found if w]


def count_syllables(word: str) -> int:
    """Syllables of one word by the vowel-group rule of the module docstring (0 for no letters)."""
    word = "".join(ch for ch in word.lower() if ch.isalpha())
    if not word:
        return 0
    groups = len(_VOWEL_GROUPS.findall(word))
    sounded_le = len(word) > 2 and word.endswith("le") and word[-3] not in "aeiouy"
    if word.endswith("e") and not word.endswith("ee") and not sounded_le and groups > 1:
        groups -= 1
    return max(groups, 1)


def line_syllables(line: str) -> int:
    """Syllables of a line: the sum over its words."""
    return sum(count_syllables(w) for w in words(line))


def speeches(text: str) -> list[tuple[str, list[str]]]:
    """``(speaker, lines)`` for every speech: a ``NAME:`` line and the lines after it."""
    found = []
    for block in text.split("\n\n"):
        lines = [line for line in block.strip("\n").split("\n") if line.strip()]
        if len(lines) >= 2 and _SPEAKER.match(lines[0]):
            found.append((lines[0][:-1], lines[1:]))
    return found


def _starts_capital(line: str) -> bool:
    stripped = line.lstrip(" '\"([")
    return bool(stripped) and stripped[0].isupper()


def is_verse(lines: list[str], *, min_lines: int = 2, max_chars: int = 60) -> bool:
    """Whether a speech's lines are verse, by the rule of the module docstring."""
    return (
        len(lines) >= min_lines
        and all(_starts_capital(line) for line in lines)
        and all(len(line) <= max_chars for line in lines)
    )


def extract_verse(text: str, **rule) -> str:
    """The lines of every verse speech of ``text``, speeches separated by a blank line.

    Speaker names are left out: the training text is the verse alone.
    """
    kept = ["\n".join(lines) for _, lines in speeches(text) if is_verse(lines, **rule)]
    return "\n\n".join(kept) + "\n"


def poem_lines(text: str) -> list[str]:
    """The non-empty lines of a sample, without speaker lines (``NAME:``)."""
    return [
        line.strip()
        for line in text.split("\n")
        if line.strip() and not _SPEAKER.match(line.strip())
    ]


def vocabulary(text: str) -> set[str]:
    """Every word that occurs in ``text`` (see :func:`words`)."""
    return set(words(text))


def real_word_share(text: str, known: set[str]) -> float:
    """Share of the words of ``text`` found in ``known`` (nan when ``text`` has no words)."""
    found = words(text)
    return float(np.mean([w in known for w in found])) if found else float("nan")


@dataclass(frozen=True)
class VerseMetrics:
    """How much a text looks like pentameter verse (see :func:`verse_metrics`)."""

    lines: int  # non-empty, non-speaker lines
    syllables_mean: float  # mean syllables per line
    syllables_error: float  # mean |syllables - 10| per line
    near_ten: float  # share of lines with 9 to 11 syllables
    chars_mean: float  # mean characters per line
    real_words: float  # share of words that occur in the training verse


def verse_metrics(text: str, known: Iterable[str], *, drop_last: bool = True) -> VerseMetrics:
    """Measure the form of ``text`` (a sample) against pentameter.

    ``drop_last`` leaves out the last line, which a sample of fixed length
    usually cuts in the middle.
    """
    lines = measured_lines(text, drop_last=drop_last)
    known = known if isinstance(known, set) else set(known)
    if not lines:
        nan = float("nan")
        return VerseMetrics(0, nan, nan, nan, nan, nan)
    counts, chars = line_lengths(lines)
    return VerseMetrics(
        lines=len(lines),
        syllables_mean=float(counts.mean()),
        syllables_error=float(np.abs(counts - PENTAMETER).mean()),
        near_ten=float(np.mean(np.abs(counts - PENTAMETER) <= 1)),
        chars_mean=float(chars.mean()),
        real_words=real_word_share("\n".join(lines), known),
    )


def measured_lines(text: str, *, drop_last: bool = True) -> list[str]:
    """The lines :func:`verse_metrics` measures: :func:`poem_lines`, without a last line that
    the end of a sample cut short (when ``drop_last`` and ``text`` does not end in a newline)."""
    lines = poem_lines(text)
    if drop_last and len(lines) > 1 and not text.endswith("\n"):
        lines = lines[:-1]
    return lines


def line_lengths(lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Syllables and characters of each line: the line-length distributions of a text."""
    return (
        np.array([line_syllables(line) for line in lines], dtype=float),
        np.array([len(line) for line in lines], dtype=float),
    )
