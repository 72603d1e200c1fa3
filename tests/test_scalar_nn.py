"""scalar_nn: neurons, layers and an MLP built from Value."""

from __future__ import annotations

import pytest

from backprop_course.autograd import Value
from backprop_course.bench import bench_autograd
from backprop_course.scalar_nn import MLP, Layer, Neuron


def test_mlp_shapes_and_parameter_count():
    """A 2-16-16-1 MLP has micrograd's 337 parameters and returns one Value."""
    model = MLP(2, [16, 16, 1], rng=0)
    assert len(model.parameters()) == 2 * 16 + 16 + 16 * 16 + 16 + 16 + 1
    assert isinstance(model([0.5, -1.0]), Value)
    assert len(Layer(3, 4, rng=0)([1.0, 2.0, 3.0])) == 4


def test_seed_makes_weights_reproducible():
    """The same seed gives the same initial weights."""
    first = [p.data for p in MLP(2, [4, 1], rng=3).parameters()]
    assert first == [p.data for p in MLP(2, [4, 1], rng=3).parameters()]


def test_neuron_rejects_wrong_input_length():
    """A neuron given the wrong number of inputs says how many it expects."""
    with pytest.raises(ValueError, match="expects 3 inputs, got 2"):
        Neuron(3, rng=0)([1.0, 2.0])


def test_training_lowers_the_loss():
    """A few SGD steps on a tiny regression lower the MSE."""
    model = MLP(1, [8, 1], rng=0)
    xs, ys = [-1.0, -0.5, 0.0, 0.5, 1.0], [1.0, 0.25, 0.0, 0.25, 1.0]
    losses = []
    for _ in range(30):
        loss = sum((model([x]) - y) ** 2 for x, y in zip(xs, ys, strict=True)) * (1 / len(xs))
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= 0.05 * p.grad
        losses.append(loss.data)
    assert losses[-1] < 0.5 * losses[0]


def test_bench_autograd_reports_the_contract_fields():
    """bench autograd returns ours_ms, micrograd_ms (or None) and ratio, with the machine."""
    result = bench_autograd(repeats=1, micrograd_repeats=1)
    assert result["ours_ms"] > 0 and "machine" in result
    if result["micrograd_ms"] is None:
        assert result["ratio"] is None
    else:
        assert result["same_loss"] is True
        assert result["ratio"] == pytest.approx(
            result["micrograd_ms"] / result["ours_ms"], rel=0.01
        )
