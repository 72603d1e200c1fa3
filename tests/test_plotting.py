"""The course's plots: what they draw, how they label it, and how they refuse bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import time
from itertools import pairwise

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.patches import FancyArrowPatch

from backprop_course import data, plotting
from backprop_course.autograd import Value
from backprop_course.scalar_nn import MLP


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _neuron():
    """tanh(x1*w1 + x2*w2 + b) after backward: 10 values, 5 ops."""
    x1, x2 = Value(2.0, label="x1"), Value(0.0, label="x2")
    w1, w2 = Value(-3.0, label="w1"), Value(1.0, label="w2")
    b = Value(6.8813735870195432, label="b")
    n = x1 * w1 + x2 * w2 + b
    n.label = "n"
    out = n.tanh()
    out.label = "o"
    out.backward()
    return out


def _tagged(ax, gid, kind="patches"):
    return [a for a in getattr(ax, kind) if a.get_gid() == gid]


def _arrows(ax):
    return [p for p in ax.patches if isinstance(p, FancyArrowPatch)]


class StandIn:
    """A learner's own minimal Value, as in lesson 03: a set of children, no label."""

    def __init__(self, data, children=(), op=""):
        self.data, self.grad = data, 0.0
        self._prev, self._op = set(children), op

    def __add__(self, other):
        return StandIn(self.data + other.data, (self, other), "+")

    def __mul__(self, other):
        return StandIn(self.data * other.data, (self, other), "*")


def test_draw_graph_draws_one_box_and_text_per_value():
    """Each Value becomes one box and one text; each op one circle; every edge one arrow."""
    out = _neuron()
    nodes = out.topological_order()
    ax = plotting.draw_graph(out)
    assert len(_tagged(ax, "value")) == len(nodes) == 10
    assert len(_tagged(ax, "value", "texts")) == len(nodes)
    ops = [n for n in nodes if n._prev]
    assert len(_tagged(ax, "op")) == len(_tagged(ax, "op", "texts")) == len(ops) == 5
    assert len(_arrows(ax)) == sum(len(n._prev) for n in nodes) + len(ops)


def test_draw_graph_shows_label_data_and_grad_with_4_significant_digits():
    """A box reads its label, then data and grad rounded to 4 significant digits."""
    ax = plotting.draw_graph(_neuron())
    texts = {t.get_text() for t in _tagged(ax, "value", "texts")}
    assert "o\ndata 0.7071\ngrad 1" in texts
    assert "b\ndata 6.881\ngrad 0.5" in texts
    assert "x1\ndata 2\ngrad -1.5" in texts
    assert {t.get_text() for t in _tagged(ax, "op", "texts")} == {"*", "+", "tanh"}


def test_draw_graph_puts_inputs_left_and_output_right():
    """The output's box is the rightmost, and every op sits right of its inputs."""
    out = _neuron()
    ax = plotting.draw_graph(out)
    left = {t.get_text().split("\n")[0]: t.get_position()[0] for t in ax.texts}
    assert left["o"] == max(t.get_position()[0] for t in ax.texts)
    assert left["x1"] < left["n"] < left["o"]


def test_draw_graph_draws_a_reused_value_once():
    """In a*a + a, the value a is one box with three arrows leaving it."""
    a = Value(3.0, label="a")
    c = a * a + a
    c.backward()
    ax = plotting.draw_graph(c)
    texts = [t.get_text() for t in _tagged(ax, "value", "texts")]
    assert len(_tagged(ax, "value")) == 3
    assert sum(t.startswith("a\n") for t in texts) == 1
    assert "a\ndata 3\ngrad 7" in texts
    box = min(_tagged(ax, "value"), key=lambda p: p.get_x())  # a, the leftmost box
    right = box.get_x() + box.get_width()
    leaving = [p for p in _arrows(ax) if np.isclose(p.get_path().vertices[0][0], right)]
    assert len(leaving) == 3


def test_draw_graph_refuses_a_deep_chain_quickly_before_drawing():
    """A 100,000-deep chain raises the clear ValueError fast, without recursion or a figure."""
    x = Value(0.5)
    for _ in range(100_000):
        x = x.relu()
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        plotting.draw_graph(x)
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert "this graph has 100001 nodes; draw_graph draws at most 150" in message
    assert "draw a smaller expression or pass max_nodes=" in message
    assert plt.get_fignums() == []


def test_draw_graph_max_nodes_can_be_raised():
    """Passing a larger max_nodes draws a graph the default refuses."""
    x = Value(0.5)
    for _ in range(160):
        x = x.relu()
    with pytest.raises(ValueError, match="161 nodes"):
        plotting.draw_graph(x)
    ax = plotting.draw_graph(x, max_nodes=200)
    assert len(_tagged(ax, "value")) == 161


def test_draw_graph_draws_a_learners_own_value_class():
    """Only .data .grad ._prev (and ._op if present) are needed: a stand-in class draws."""
    a, b = StandIn(2.0), StandIn(-3.0)
    out = a * b + a
    ax = plotting.draw_graph(out)
    assert len(_tagged(ax, "value")) == 4
    assert len(_tagged(ax, "op")) == 2
    assert ax.get_title() == "Computation graph: 4 values, 2 operations"


def test_draw_graph_draws_a_small_mlp_into_a_given_axes():
    """A 2-3-1 MLP's loss graph (about 40 values) draws into the Axes it is given."""
    model = MLP(2, [3, 1], rng=0)
    loss = (model([1.0, -2.0]) - 1.0) ** 2
    loss.backward()
    _, given = plt.subplots()
    ax = plotting.draw_graph(loss, ax=given)
    assert ax is given
    assert len(_tagged(ax, "value")) == len(loss.topological_order())


def test_draw_graph_labels_its_axes():
    """The graph has a title naming the output and an x label saying which way data flows."""
    ax = plotting.draw_graph(_neuron())
    assert ax.get_title() == "Computation graph of o: 10 values, 5 operations"
    assert "forward" in ax.get_xlabel() and "backward" in ax.get_xlabel()


def test_draw_graph_rejects_a_number():
    """A plain float is not a graph: TypeError saying what draw_graph expects."""
    with pytest.raises(TypeError, match="expects a Value"):
        plotting.draw_graph(1.5)


def _net(rng, sizes):
    return [rng.normal(size=(n_out, n_in)) for n_in, n_out in pairwise(sizes)]


def test_draw_network_with_grads_draws_every_weight():
    """One line per weight, one circle per neuron, a colorbar and the 'error flows back' arrow."""
    rng = np.random.default_rng(0)
    sizes = [3, 4, 2]
    ax = plotting.draw_network(sizes, weights=_net(rng, sizes), grads=_net(rng, sizes))
    (edges,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert edges.get_gid() == "weights"
    assert len(edges.get_segments()) == 3 * 4 + 4 * 2
    assert len(_tagged(ax, "neuron")) == sum(sizes)
    assert "error flows back" in [t.get_text() for t in ax.texts]
    assert len(ax.figure.axes) == 2  # the colorbar
    assert "dL/dw" in ax.figure.axes[1].get_ylabel()
    assert ax.get_title() and ax.get_xlabel() == "layer"


def test_draw_network_line_width_grows_with_the_gradient():
    """The weight with the largest |grad| gets the widest line, a zero grad the thinnest."""
    grads = [np.array([[0.0, 2.0]]), np.array([[-0.5]])]
    ax = plotting.draw_network([2, 1, 1], grads=grads)
    (edges,) = ax.collections[:1]
    widths = edges.get_linewidths()
    assert widths[-1] == max(widths) and widths[0] == min(widths)


def test_draw_network_without_values_draws_plain_lines():
    """Without weights or grads: grey lines of one width, no colorbar, no arrow."""
    ax = plotting.draw_network([2, 3, 1], title="A tiny network")
    (edges,) = ax.collections
    assert len(edges.get_segments()) == 2 * 3 + 3 * 1
    assert len(ax.figure.axes) == 1
    assert ax.get_title() == "A tiny network"
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["input\n(2 neurons)", "hidden\n(3 neurons)", "output\n(1 neuron)"]


def test_draw_network_names_the_layer_with_a_wrong_shape():
    """A gradient of the wrong shape raises ValueError naming its index, expected and got."""
    grads = [np.zeros((3, 2)), np.zeros((3, 1))]
    with pytest.raises(ValueError, match=r"grads\[1\].*\(1, 3\), got \(3, 1\)"):
        plotting.draw_network([2, 3, 1], grads=grads)


def test_draw_network_wants_one_array_per_layer_pair():
    """Too few weight arrays, or bad layer sizes, raise a ValueError that says so."""
    with pytest.raises(ValueError, match=r"weights must hold 2 arrays.*got 1"):
        plotting.draw_network([2, 3, 1], weights=[np.zeros((3, 2))])
    with pytest.raises(ValueError, match="layer_sizes"):
        plotting.draw_network([2])
    with pytest.raises(ValueError, match="layer_sizes"):
        plotting.draw_network([2, 0, 1])


def test_plot_loss_curve_one_list():
    """A list of losses draws one line of that length, labelled, with no legend."""
    ax = plotting.plot_loss_curve([3.0, 2.0, 1.5, 1.2])
    (line,) = ax.get_lines()
    assert list(line.get_ydata()) == [3.0, 2.0, 1.5, 1.2]
    assert ax.get_legend() is None
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("Training loss", "step", "loss")


def test_plot_loss_curve_dict_draws_a_legend():
    """A dict draws one curve per name and a legend naming them; logy gives a log axis."""
    curves = {"train": [1.0, 0.5, 0.2], "validation": np.array([1.1, 0.7, 0.6])}
    ax = plotting.plot_loss_curve(curves, logy=True, xlabel="epoch")
    assert len(ax.get_lines()) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "validation"]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "epoch"


def test_plot_loss_curve_accepts_values():
    """Losses kept as Value objects (forgetting .data) are plotted by their data."""
    ax = plotting.plot_loss_curve([Value(2.0), Value(1.0)], label="scalar MLP")
    assert list(ax.get_lines()[0].get_ydata()) == [2.0, 1.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["scalar MLP"]


def test_plot_loss_curve_rejects_an_empty_list():
    """No losses is an error that says which curve is empty."""
    with pytest.raises(ValueError, match="non-empty"):
        plotting.plot_loss_curve({"train": []})


def test_decision_boundary_binary():
    """1-D scores: two regions, the score = 0 line, both classes in the legend, x1/x2 labels."""
    X, y = data.make_moons(60)
    seen = []

    def predict(points):
        seen.append(points.shape)
        return points[:, 1] - 0.25

    ax = plotting.plot_decision_boundary(predict, X, y, resolution=50)
    assert seen == [(50 * 50, 2)]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["class 0", "class 1", "score = 0"]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("Decision boundary", "x1", "x2")


def test_decision_boundary_multiclass():
    """(m, k) scores: argmax regions, and one legend entry per class."""
    X, y = data.make_spirals(90, classes=3)
    centres = np.array([[1.0, 0.0], [-0.5, 0.8], [-0.5, -0.8]])
    ax = plotting.plot_decision_boundary(lambda p: p @ centres.T, X, y, title="Three classes")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["class 0", "class 1", "class 2"]
    assert ax.get_title() == "Three classes" and ax.get_xlabel() == "x1"


def test_decision_boundary_accepts_values_from_a_scalar_model():
    """predict may return a list of Value objects (lesson 05's scalar MLP): their data is used."""
    X, y = data.make_xor(20)
    model = MLP(2, [4, 1], rng=0)
    ax = plotting.plot_decision_boundary(lambda P: [model(list(p)) for p in P], X, y, resolution=8)
    assert ax.get_xlabel() == "x1"


def test_decision_boundary_rejects_scores_of_the_wrong_length():
    """A predict that returns the wrong number of scores gets a ValueError saying so."""
    X, y = data.make_moons(20)
    with pytest.raises(ValueError, match="predict must return shape"):
        plotting.plot_decision_boundary(lambda p: p[:10, 0], X, y, resolution=10)
