"""The course's pictures, drawn with matplotlib alone.

Diagrams (:mod:`.graph`):

- :func:`draw_graph`: the computation graph of a scalar ``Value``, inputs on
  the left, the output on the right, each value with its ``data`` and ``grad``.
- :func:`draw_network`: a layered network diagram, one line per weight;
  given gradients, line width and colour show how much error reaches each weight.

Curves (:mod:`.curves`):

- :func:`plot_loss_curve`: one or several training curves.
- :func:`plot_decision_boundary`: the regions a 2-D classifier assigns to each class.

Training diagnostics (:mod:`.training`):

- :func:`plot_gradient_flow`: the gradient norm of each layer, input to output.
- :func:`plot_histograms`: one histogram per layer (activations or gradients).
- :func:`plot_update_ratio`: log10 of |update| / |parameter| per step, with the 1e-3 guide.
- :class:`LiveLossPlot`: a loss curve that redraws itself in a notebook while training.
- :func:`plot_optimizer_paths`: optimizer trajectories over the contours of a 2-D function.

Each function draws into ``ax`` when one is given (else into a new figure),
sets a title and axis labels, and returns the Axes (``plot_histograms``, which
draws several Axes, returns the Figure).
"""

from backprop_course.plotting.curves import plot_decision_boundary, plot_loss_curve
from backprop_course.plotting.graph import draw_graph, draw_network
from backprop_course.plotting.training import (
    LiveLossPlot,
    plot_gradient_flow,
    plot_histograms,
    plot_optimizer_paths,
    plot_update_ratio,
)

__all__ = [
    "LiveLossPlot",
    "draw_graph",
    "draw_network",
    "plot_decision_boundary",
    "plot_gradient_flow",
    "plot_histograms",
    "plot_loss_curve",
    "plot_optimizer_paths",
    "plot_update_ratio",
]
