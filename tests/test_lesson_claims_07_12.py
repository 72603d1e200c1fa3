"""Numbers and behaviours that the text of lessons 07-12 states, checked against the package.

Where a lesson's sentence depends on what package code does (an explorer, a demo's
settings), the sentence is pinned here, so that a change to the package that would
make the text wrong fails a test instead of misleading a learner.
"""

from __future__ import annotations

import numpy as np
import pytest

from backprop_course import nn


def test_lesson07_he_keeps_the_mean_square_and_relu_std_is_083_of_it():
    """Lesson 07: He init keeps a ReLU output's E[a^2] near 1, and its std is ~0.83 of its rms."""
    x = np.random.default_rng(0).normal(size=(4096, 256))
    a = np.maximum(nn.Linear(256, 256, init="he", rng=1).forward(x), 0)
    rms = np.sqrt((a**2).mean())
    assert rms == pytest.approx(1.0, abs=0.05)
    assert a.std() / rms == pytest.approx(np.sqrt(1 - 1 / np.pi), abs=0.01)
