"""The toy datasets: shapes, labels, balance, determinism and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_course import data

MAKERS = {
    "moons": data.make_moons,
    "circles": data.make_circles,
    "spirals": data.make_spirals,
    "xor": data.make_xor,
}


@pytest.mark.parametrize("name", MAKERS)
@pytest.mark.parametrize("n", [2, 7, 100])
def test_shapes_and_dtypes(name, n):
    """Every maker returns X float64 (n, 2) and y int64 (n,) with finite values."""
    X, y = MAKERS[name](n=n)
    assert X.shape == (n, 2) and X.dtype == np.float64
    assert y.shape == (n,) and y.dtype == np.int64
    assert np.isfinite(X).all()


@pytest.mark.parametrize("name", MAKERS)
@pytest.mark.parametrize("n", [2, 9, 101])
def test_two_classes_balanced(name, n):
    """Binary sets hold labels 0 and 1, their counts differing by at most one."""
    _, y = MAKERS[name](n=n)
    counts = np.bincount(y)
    assert len(counts) == 2 and counts.max() - counts.min() <= 1


@pytest.mark.parametrize(("n", "classes"), [(100, 3), (10, 4), (3, 3), (50, 5)])
def test_spirals_many_classes_balanced(n, classes):
    """make_spirals labels 0..classes-1, n shared as evenly as possible."""
    _, y = data.make_spirals(n=n, classes=classes)
    counts = np.bincount(y, minlength=classes)
    assert len(counts) == classes and counts.sum() == n
    assert counts.max() - counts.min() <= 1 and counts.min() >= 1


@pytest.mark.parametrize("name", MAKERS)
def test_same_seed_same_data(name):
    """The same seed gives exactly the same points and labels."""
    X1, y1 = MAKERS[name](n=50, seed=3)
    X2, y2 = MAKERS[name](n=50, seed=3)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("name", MAKERS)
def test_different_seed_different_data(name):
    """Another seed gives other points."""
    X1, _ = MAKERS[name](n=50, seed=0)
    X2, _ = MAKERS[name](n=50, seed=1)
    assert not np.allclose(X1, X2)


def test_points_are_shuffled():
    """Labels come in random order, not all zeros then all ones (mini-batches see both)."""
    _, y = data.make_moons(n=100)
    assert 0 < y[:50].sum() < 50


def test_circles_radii_without_noise():
    """With no noise, class 0 lies on the unit circle and class 1 on radius factor."""
    X, y = data.make_circles(n=40, noise=0.0, factor=0.3)
    radius = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_allclose(radius[y == 0], 1.0)
    np.testing.assert_allclose(radius[y == 1], 0.3)


def test_moons_without_noise():
    """With no noise, class 0 is the upper unit half circle, class 1 the shifted lower one."""
    X, y = data.make_moons(n=40, noise=0.0)
    upper, lower = X[y == 0], X[y == 1]
    np.testing.assert_allclose(np.hypot(*upper.T), 1.0)
    assert (upper[:, 1] >= -1e-12).all()
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1, lower[:, 1] - 0.5), 1.0)
    assert (lower[:, 1] <= 0.5 + 1e-12).all()


def test_xor_labels_follow_the_quadrants():
    """Without noise, the label is 1 exactly where x1 and x2 have opposite signs."""
    X, y = data.make_xor(n=200, noise=0.0)
    np.testing.assert_array_equal(y, (X[:, 0] * X[:, 1] < 0).astype(np.int64))


def test_spirals_stay_within_unit_disc():
    """Spiral points have radius at most 1 (the noise turns them, it does not push them out)."""
    X, _ = data.make_spirals(n=300, classes=3, noise=0.5)
    assert np.hypot(*X.T).max() <= 1 + 1e-12


def test_spiral_turn_sets_how_far_each_arm_winds():
    """Without noise, arm 0 ends at angle `turn` (mod 2π); the default turn is 4 radians."""
    for turn, kwargs in [(4.0, {}), (7.0, {"turn": 7.0})]:
        X, y = data.make_spirals(n=300, classes=3, noise=0.0, **kwargs)
        arm = X[y == 0]
        outer = arm[np.argmax(np.hypot(*arm.T))]
        angle = np.arctan2(outer[1], outer[0]) % (2 * np.pi)
        assert np.isclose(angle, turn % (2 * np.pi)), (turn, angle)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "7", None])
def test_bad_spiral_turn_is_a_clear_error(bad):
    """A non-finite or non-numeric turn raises ValueError naming turn and the value received."""
    with pytest.raises(ValueError, match=r"turn must be a finite number, got") as error:
        data.make_spirals(turn=bad)
    assert repr(bad) in str(error.value)


@pytest.mark.parametrize("name", MAKERS)
@pytest.mark.parametrize("bad", [1, 0, -5, 2.5, "10", True, None])
def test_bad_n_is_a_clear_error(name, bad):
    """n below 2 or not an int raises ValueError naming n, what was expected and what came."""
    with pytest.raises(ValueError, match=r"n must be an integer >= 2, got") as error:
        MAKERS[name](n=bad)
    assert repr(bad) in str(error.value)


@pytest.mark.parametrize("name", MAKERS)
@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.1"])
def test_bad_noise_is_a_clear_error(name, bad):
    """Negative or non-numeric noise raises ValueError naming noise and the value received."""
    with pytest.raises(ValueError, match=r"noise must be a number >= 0, got") as error:
        MAKERS[name](noise=bad)
    assert repr(bad) in str(error.value)


@pytest.mark.parametrize("bad", [1, 0, 2.0])
def test_bad_classes_is_a_clear_error(bad):
    """classes below 2 or not an int raises ValueError naming classes and the value received."""
    with pytest.raises(ValueError, match=rf"classes must be an integer >= 2, got {bad!r}"):
        data.make_spirals(classes=bad)


def test_fewer_points_than_classes_is_a_clear_error():
    """make_spirals needs at least one point per class."""
    with pytest.raises(ValueError, match=r"n must be an integer >= 4, got 3"):
        data.make_spirals(n=3, classes=4)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.2])
def test_bad_factor_is_a_clear_error(bad):
    """make_circles needs 0 < factor < 1 and says so."""
    with pytest.raises(ValueError, match=rf"factor must be a number between 0 and 1, got {bad!r}"):
        data.make_circles(factor=bad)
