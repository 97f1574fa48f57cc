"""d2l's training figure for the char LM: perplexity per epoch, train and validation, as a PNG.

d2l's ``train_ch8`` animates ``perplexity`` against ``epoch`` for the training stream (d2l 8.5.5
"Training"; 9.2 for the LSTM); here the validation perplexity joins it where it was measured. The
file is rendered in memory with matplotlib's Agg canvas (no display, no pyplot state) and written
atomically, so a run interrupted between epochs leaves the last complete figure.

matplotlib is imported inside the functions: the layers and the rest of the application never
import it (tests/test_light_core.py).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from .checkpoint import atomic_write


def perplexity_title(impl: str, cell: str, nonlinearity: str = "tanh", fusion: str | None = None) -> str:
    """``'LSTM char LM, impl triton (fusion persistent)'``: the cell (the RNN's nonlinearity when
    relu), the implementation, and for ``triton`` the fusion level, when given."""
    name = cell.upper() + (f" ({nonlinearity})" if cell == "rnn" and nonlinearity != "tanh" else "")
    level = f" (fusion {fusion})" if impl == "triton" and fusion else ""
    return f"{name} char LM, impl {impl}{level}"


def perplexity_figure(metrics: pd.DataFrame, title: str):
    """A matplotlib Figure (720 x 480 pixels at its dpi) on an Agg canvas: perplexity against
    epoch, one line ``train`` and one ``val`` (the epochs where it was measured, i.e. not NaN).

    ``metrics``: the Trainer's per-epoch frame (:meth:`Trainer.metrics`), with columns ``epoch``,
    ``train_perplexity`` and ``val_perplexity``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure, SubplotParams
    from matplotlib.ticker import MaxNLocator

    # Fixed margins, not tight_layout: that one measures every text box again and took a third of
    # the figure's time, paid after every epoch.
    fig = Figure(figsize=(6, 4), dpi=120, subplotpars=SubplotParams(left=0.11, right=0.97, bottom=0.12, top=0.92))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    val = metrics[metrics["val_perplexity"].notna()]
    for x, y, label in ((metrics["epoch"], metrics["train_perplexity"], "train"),
                        (val["epoch"], val["val_perplexity"], "val")):
        if len(x):  # markers on short or sparse (eval_every > 1) curves: one point draws no line
            ax.plot(x, y, marker="o" if len(x) <= 50 else None, markersize=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def plot_perplexity(metrics: pd.DataFrame, path: str | Path, title: str) -> None:
    """Write :func:`perplexity_figure` to ``path`` as PNG, atomically: rendered in memory first,
    then written to a temporary sibling and renamed (:func:`~.checkpoint.atomic_write`)."""
    buffer = io.BytesIO()
    perplexity_figure(metrics, title).savefig(buffer, format="png")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
