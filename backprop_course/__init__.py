"""backprop_course: the companion package of the backpropagation course.

In a notebook::

    from backprop_course import check, hint, progress

    check("01.central_difference", central_difference)  # right or wrong, and why
    hint("01.central_difference")                       # one more hint each call
    progress()                                          # points per lesson
"""

from importlib.metadata import PackageNotFoundError, version

from backprop_course.checking import check, evaluate, hint, progress

try:  # the one place the version is written is pyproject.toml
    __version__ = version("backprop-course")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "check", "evaluate", "hint", "progress"]
