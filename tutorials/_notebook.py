"""What lets each tutorial run both as a script and as a notebook (Jupyter, VS Code).

- :func:`options`: the command line's options in a script; in a notebook kernel (whose
  command line belongs to the kernel) the defaults, with ``--quick`` taken from the
  environment variable ``CAPTUM_CD_QUICK=1`` (``%env CAPTUM_CD_QUICK=1`` in a cell) and
  ``--out`` from ``CAPTUM_CD_OUT``.
- :func:`show`: writes a figure to a file and, in a notebook, displays it inline.

Importing it puts the repository's root on ``sys.path``, so that the tutorials find
``experiments/`` (data loaders and small models, which are not installed).

Nothing here chooses matplotlib's backend: a notebook keeps its inline backend, a script
without a display draws off screen (matplotlib's own fallback, or ``MPLBACKEND=Agg``).
"""

import argparse
import os
import sys
from typing import Optional

# tutorials/_notebook.py -> the repository root, where experiments/ lives
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def in_notebook() -> bool:
    return "ipykernel" in sys.modules


def options(parser: argparse.ArgumentParser) -> argparse.Namespace:
    args, _ = parser.parse_known_args([] if in_notebook() else None)
    if os.environ.get("CAPTUM_CD_QUICK", "") not in ("", "0") and hasattr(args, "quick"):
        args.quick = True
    if os.environ.get("CAPTUM_CD_OUT") and hasattr(args, "out"):
        args.out = os.environ["CAPTUM_CD_OUT"]
    return args


def show(figure, path: Optional[str] = None, **savefig_kwargs) -> None:
    """Writes ``figure`` to ``path`` (if given); in a notebook also shows it inline."""
    import matplotlib.pyplot as plt

    if path is not None:
        figure.savefig(path, **savefig_kwargs)
    if in_notebook():
        from IPython.display import display

        display(figure)
    plt.close(figure)  # shown once, and no figures pile up in a long run
