"""``show``: display an object as a notebook would, or print it when there is no notebook."""

from typing import Any

from tl_interp._checks import checked

__all__ = ["show"]


@checked
def show(obj: Any) -> None:
    """Display ``obj`` in a running IPython / Jupyter kernel (its ``_repr_html_``), else print it.

    What a notebook cell ending in ``obj`` shows, from a cell that is also run as a plain
    script (the demos are both).

    Example:
        >>> show("a result")
        a result
    """
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # IPython is not installed: a plain script
        print(obj)
        return
    if get_ipython() is None:
        print(obj)
    else:
        display(obj)
