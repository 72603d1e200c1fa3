"""Interactive explorers for the notebooks (ipywidgets), and the pure functions behind them.

- :func:`gradient_flow` builds a deep ``nn.MLP``, runs one forward and backward pass
  on random data, and returns, per layer, the gradient ``dL/da`` reaching it, the
  spread of its activations and its weight gradient; :func:`gradient_flow_explorer`
  puts sliders on it (depth, activation, init, scale).
- :func:`run_optimizer` runs one optimizer from ``backprop_course.optim`` on a 2-D
  surface and returns its path; :func:`learning_rate_explorer` puts sliders on it
  (surface, optimizer, learning rate, steps).

The explorers return an ``ipywidgets.interactive``: show it as the last expression
of a cell. Each draws its first picture when built, so it also works when nobody
moves a slider (and under nbval). Every redraw is one PNG image in the widget's
output; ``explorer.plotter.redraws`` counts them and ``explorer.plotter.figure`` is
the last figure. IPython and ipywidgets are imported only when an explorer is built.

Displayed, an explorer's cell output carries its starting picture twice over: the
live widget (whose saved state holds the picture, when JupyterLab saves widget
state, as ``backprop-course start`` sets it to) and, in the same output, a static
PNG of that picture (``image/png`` beside the widget view). JupyterLab shows the
widget; a viewer without widgets (GitHub, nbviewer, a notebook reopened without
its widget state) shows the PNG, so the lesson's picture is never missing.

A known JupyterLab widget-manager limitation (jupyter-widgets/ipywidgets#3888, fix
proposed in #4015): a notebook reopened on a new kernel shows its saved widgets, but
saving it again before its cells are rerun drops that saved state. Rerunning the
explorer's cell (as every lesson does from the top) saves it again.
"""

from __future__ import annotations

import base64
import functools

import numpy as np
from matplotlib.figure import Figure

from backprop_course.plotting import (
    plot_gradient_flow,
    plot_histograms,
    plot_loss_curve,
    plot_optimizer_paths,
)
from backprop_course.plotting.training import _png

__all__ = [
    "OPTIMIZERS",
    "SURFACES",
    "gradient_flow",
    "gradient_flow_explorer",
    "learning_rate_explorer",
    "run_optimizer",
]

ACTIVATIONS = ("relu", "tanh", "sigmoid")
INITS = (("he", "he"), ("glorot", "glorot"), ("N(0, 1)", 1.0), ("N(0, 0.01²)", 0.01))

# name: (start point, x range, y range) of the surfaces in backprop_course.optim
SURFACES = {
    "rosenbrock": ((-1.2, 1.0), (-2.0, 2.0), (-1.0, 3.0)),
    "bowl": ((-4.0, 1.5), (-5.0, 5.0), (-2.5, 2.5)),
    "saddle": ((-1.5, 0.05), (-2.0, 2.0), (-2.0, 2.0)),
}
OPTIMIZERS = {"sgd": "SGD", "momentum": "Momentum", "rmsprop": "RMSprop", "adam": "Adam"}


class _Plotter:
    """Draws one picture per call into a fresh (non-pyplot) Figure and displays it as a PNG."""

    def __init__(self, draw):
        self.draw = draw  # draw(fig, **controls) -> result
        self.redraws = 0
        self.figure = None
        self.result = None
        self.first_png = None  # the starting picture, as PNG bytes

    def show(self, figsize, **controls):
        from IPython.display import Image, display

        fig = Figure(figsize=figsize, layout="constrained")
        self.result = self.draw(fig, **controls)
        png = _png(fig, tight=False)
        display(Image(data=png, format="png"))
        if self.first_png is None:
            self.first_png = png
        self.figure = fig
        self.redraws += 1


@functools.cache
def _explorer_class():
    """``ipywidgets.interactive`` whose display also carries its starting picture as a PNG."""
    import ipywidgets as w

    class Explorer(w.interactive):
        """An interactive plot; its output holds the widget and a PNG of its first picture."""

        plotter: _Plotter
        title = "explorer"

        def _repr_mimebundle_(self, **kwargs):
            bundle = super()._repr_mimebundle_(**kwargs)
            if bundle is not None and self.plotter.first_png is not None:
                bundle["image/png"] = base64.b64encode(self.plotter.first_png).decode("ascii")
                bundle["text/plain"] = (
                    f"{self.title} (its starting picture; the sliders need a running kernel)"
                )
            return bundle

    return Explorer


def _explorer(redraw, plotter: _Plotter, title: str, controls: dict):
    explorer = _explorer_class()(redraw, **controls)
    explorer.plotter = plotter
    explorer.title = title
    return explorer


# ---------------------------------------------------------------- gradient flow


def gradient_flow(
    depth: int,
    activation: str = "tanh",
    init="glorot",
    width: int = 64,
    seed: int = 0,
    scale: float = 1.0,
    batch: int = 128,
    classes: int = 10,
) -> dict:
    """One forward and backward pass through a fresh deep MLP; what reaches each layer.

    The network has ``depth`` Linear layers (``width`` wide, ``classes`` outputs)
    with ``activation`` between them, initialised with ``init`` ("he", "glorot",
    "normal" or a float std) and then multiplied by ``scale``. It sees ``batch``
    standard-normal inputs with random labels under softmax cross-entropy.

    Returns a dict:

    - ``"names"``: ``["layer 1", ...]``, one per Linear layer, and ``"grad_norms"``:
      the norm of each Linear layer's weight gradient ``|dW|``;
    - ``"hidden"``: ``["layer 1", ...]``, one per activation (hidden) layer,
      ``"activation_grad_norms"``: the norm of ``dL/da`` arriving at each hidden
      layer's output (the error signal of the backward pass), and
      ``"activation_stds"``: the standard deviation of each hidden layer's output
      (the forward signal);
    - ``"activations"``: ``{"layer k": output of the k-th activation}``; ``"loss"``.

    ``|dW_l| = |a_{l-1}^T delta_l|`` multiplies the forward signal by the backward one,
    so when both drift by the same factor per layer (ReLU at any init scale) the
    weight gradients stay level while ``dL/da`` vanishes or explodes.
    """
    from backprop_course import nn

    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    model = nn.MLP([width] * depth + [classes], activation=activation, init=init, rng=seed)
    linears = [layer for layer in model.layers if isinstance(layer, nn.Linear)]
    for layer in linears:
        layer.W *= scale
    rng = np.random.default_rng(seed + 1)
    h = rng.standard_normal((batch, width))
    targets = rng.integers(0, classes, size=batch)
    activations, activation_grad_norms = {}, []
    with np.errstate(all="ignore"):
        for layer in model.layers:
            h = layer.forward(h)
            if not isinstance(layer, nn.Linear):
                activations[f"layer {len(activations) + 1}"] = h
        criterion = nn.SoftmaxCrossEntropy()
        loss = float(criterion.forward(h, targets))
        grad = criterion.backward()
        for layer in reversed(model.layers):
            if not isinstance(layer, nn.Linear):  # grad is dL/d(output of this activation)
                activation_grad_norms.append(float(np.linalg.norm(grad)))
            grad = layer.backward(grad)
        stds = [float(a.std()) for a in activations.values()]
    return {
        "names": [f"layer {i}" for i in range(1, len(linears) + 1)],
        "grad_norms": [float(np.linalg.norm(layer.dW)) for layer in linears],
        "hidden": list(activations),
        "activation_grad_norms": activation_grad_norms[::-1],
        "activation_stds": stds,
        "activations": activations,
        "loss": loss,
    }


def _init_label(init) -> str:
    return next((label for label, value in INITS if value == init), str(init))


def _ratio(values) -> str:
    return f"{values[0] / values[-1]:.1e}" if values and values[-1] > 0 else "n/a"


def _signal_panel(ax, names, values, title, ylabel):
    """One per-layer panel (bars, log scale); says so on the axes if the values overflowed."""
    try:
        plot_gradient_flow(names, values, ax=ax, title=title)
    except ValueError as error:  # overflowed: say so instead of failing
        ax.text(0.5, 0.5, str(error), ha="center", va="center", wrap=True, transform=ax.transAxes)
        ax.set(title=title)
    ax.set(xlabel="hidden layer (input → output)", ylabel=ylabel)


def _draw_gradient_flow(fig, depth, activation, init, scale, seed, width):
    result = gradient_flow(depth, activation, init, width=width, seed=seed, scale=scale)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.1])
    top.suptitle(
        f"Gradient flow: {depth} layers, {activation}, init {_init_label(init)} × {scale:.3g}"
        f"  (weight gradients |dW|, first / last layer: {_ratio(result['grad_norms'])})"
    )
    backward, forward = top.subplots(1, 2)
    numbers = [name.removeprefix("layer ") for name in result["hidden"]]
    if numbers:
        _signal_panel(
            backward,
            numbers,
            result["activation_grad_norms"],
            "backward: |dL/da| arriving at each hidden layer",
            "|dL/da| (log scale)",
        )
        _signal_panel(
            forward,
            numbers,
            result["activation_stds"],
            "forward: std of each hidden layer's activations",
            "std of a (log scale)",
        )
    else:
        backward.set_title("no hidden layer: nothing to show")
        backward.set_axis_off()
        forward.set_axis_off()
    acts = result["activations"]
    if acts:
        keys = list(acts)
        picks = sorted({round(i) for i in np.linspace(0, len(keys) - 1, min(len(keys), 6))})
        shown = {f"{keys[i]} ({activation})": acts[keys[i]] for i in picks}
        if all(np.all(np.isfinite(v)) for v in shown.values()):
            bounded = activation != "relu"
            plot_histograms(shown, title="Activations", bins=40, fig=bottom, sharex=bounded)
    return result


def gradient_flow_explorer(
    depth: int = 10,
    activation: str = "tanh",
    init_scale: float = 1.0,
    seed: int = 0,
    init="glorot",
    width: int = 64,
):
    """Sliders for depth, activation, initialisation and its scale; redraws, per hidden
    layer, the gradient ``|dL/da|`` arriving at it and the spread of its activations,
    and the activation histograms of a few layers.

    Try: sigmoid with depth 20 (the first layers get almost no gradient), relu with
    "he" (flat), then move the scale away from 1 (vanishing or exploding).
    """
    import ipywidgets as w

    plotter = _Plotter(_draw_gradient_flow)

    def redraw(depth, activation, init, scale):
        plotter.show(
            (10, 8),
            depth=depth,
            activation=activation,
            init=init,
            scale=scale,
            seed=seed,
            width=width,
        )

    slider = {"continuous_update": False, "style": {"description_width": "initial"}}
    controls = {
        "depth": w.IntSlider(value=depth, min=2, max=30, description="depth", **slider),
        "activation": w.Dropdown(options=ACTIVATIONS, value=activation, description="activation"),
        "init": w.Dropdown(options=INITS, value=init, description="init"),
        "scale": w.FloatLogSlider(
            value=init_scale, base=10, min=-1, max=1, step=0.05, description="init scale", **slider
        ),
    }
    return _explorer(redraw, plotter, "Gradient-flow explorer", controls)


# ---------------------------------------------------------------- optimizers


def run_optimizer(surface: str, optimizer: str, lr: float, steps: int, start=None) -> np.ndarray:
    """The path of ``optimizer`` on ``surface`` (names as in ``SURFACES``, ``OPTIMIZERS``).

    Starts at ``start`` (default: the surface's own start), takes ``steps``
    steps of ``backprop_course.optim``'s optimizer with learning rate ``lr``
    (other settings at their defaults) and returns the points, shape
    ``(steps + 1, 2)``, start included. A diverging run stops at its first
    non-finite point, so the path can be shorter.
    """
    from backprop_course import optim

    if surface not in SURFACES:
        raise ValueError(f"surface must be one of {sorted(SURFACES)}, got {surface!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    grad = getattr(optim, f"{surface}_grad")
    point = np.array(SURFACES[surface][0] if start is None else start, dtype=float)
    if point.shape != (2,):
        raise ValueError(f"start must be a point (x, y), got shape {point.shape}")
    opt = getattr(optim, OPTIMIZERS[optimizer])([point], lr=lr)
    path = [point.copy()]
    with np.errstate(all="ignore"):
        for _ in range(steps):
            opt.step([np.asarray(grad(point[0], point[1]), dtype=float)])
            path.append(point.copy())
            if not np.all(np.isfinite(point)):
                break
    return np.array(path)


def _draw_optimizer(fig, surface, optimizer, lr, steps):
    from backprop_course import optim

    f = getattr(optim, surface)
    path = run_optimizer(surface, optimizer, lr, steps)
    _, xlim, ylim = SURFACES[surface]
    left, right = fig.subplots(1, 2, width_ratios=[1.15, 1])
    title = f"{optimizer} on {surface}, lr = {lr:.2g}"
    plot_optimizer_paths(f, {optimizer: path}, xlim, ylim, ax=left, title=title)
    with np.errstate(all="ignore"):
        values = f(path[:, 0], path[:, 1])
    values = values[np.isfinite(values)]
    positive = bool(np.all(values > 0))
    plot_loss_curve(values, ax=right, title="f along the path", ylabel="f(x, y)", logy=positive)
    return path


def learning_rate_explorer(
    surface: str = "rosenbrock", optimizer: str = "sgd", lr: float = 1e-3, steps: int = 200
):
    """Sliders for the surface, the optimizer, the learning rate (log scale) and the
    number of steps; redraws the path over the contours and f at each step.

    Try: sgd on the bowl with lr 0.01, 0.15, 0.25 (slow, zig-zag, diverges);
    then momentum and adam at the same learning rates.
    """
    import ipywidgets as w

    plotter = _Plotter(_draw_optimizer)

    def redraw(surface, optimizer, lr, steps):
        plotter.show((11, 4.6), surface=surface, optimizer=optimizer, lr=lr, steps=steps)

    slider = {"continuous_update": False, "style": {"description_width": "initial"}}
    controls = {
        "surface": w.Dropdown(options=list(SURFACES), value=surface, description="surface"),
        "optimizer": w.Dropdown(options=list(OPTIMIZERS), value=optimizer, description="optimizer"),
        "lr": w.FloatLogSlider(
            value=lr,
            base=10,
            min=-5,
            max=0,
            step=0.1,
            description="learning rate",
            readout_format=".1e",
            **slider,
        ),
        "steps": w.IntSlider(value=steps, min=10, max=1000, step=10, description="steps", **slider),
    }
    return _explorer(redraw, plotter, "Learning-rate explorer", controls)
