"""backprop_course: the companion package of the backpropagation course.

In a notebook::

    from backprop_course import check, hint, progress

    check("01.central_difference", central_difference)  # right or wrong, and why
    hint("01.central_difference")                       # one more hint each call
    progress()                                          # points per lesson
"""

from backprop_course.checking import check, evaluate, hint, progress

__version__ = "0.1.0"

__all__ = ["__version__", "check", "evaluate", "hint", "progress"]
