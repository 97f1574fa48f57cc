"""Names of the recurrent cells the char LM can use, and d2l's per-chapter defaults.

The public names follow PyTorch: a ``cell`` is ``lstm``, ``gru`` or ``rnn`` (``nn.LSTM``, ``nn.GRU``,
``nn.RNN``), and the plain RNN takes ``nonlinearity`` ``tanh`` or ``relu`` as ``nn.RNN`` does. Inside,
one *mode* string names the function a layer computes: ``lstm``, ``gru``, ``rnn_tanh``,
``rnn_relu`` (the lower-case of ``nn.RNNBase.mode``). Checkpoints record the mode.
"""

from __future__ import annotations

from torch import nn

CELLS = ("lstm", "gru", "rnn")
NONLINEARITIES = ("tanh", "relu")
MODES = ("lstm", "gru", "rnn_tanh", "rnn_relu")

# d2l's chapters: LSTM and GRU train with 256 hidden units, the scratch RNN chapter with 512.
DEFAULT_HIDDEN = {"lstm": 256, "gru": 256, "rnn": 512}

# Row blocks per layer in PyTorch's layout: weight_ih is (GATES * H, I).
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def cell_mode(cell: str, nonlinearity: str = "tanh") -> str:
    """``("rnn", "relu") -> "rnn_relu"``; ValueError naming the argument for anything unknown,
    or for ``nonlinearity="relu"`` on a cell other than ``rnn`` (it would be silently ignored)."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {', '.join(NONLINEARITIES)}, got {nonlinearity!r}")
    if cell != "rnn":
        if nonlinearity != "tanh":
            raise ValueError(f"nonlinearity applies to cell 'rnn' only, got {nonlinearity!r} for cell {cell!r}")
        return cell
    return f"rnn_{nonlinearity}"


def layer_mode(layer: nn.Module) -> str:
    """The mode of a recurrent layer from its ``mode`` attribute (``nn.RNNBase`` and the naive
    layers carry one); a layer without one is taken for an LSTM, the only cell before GRU/RNN."""
    mode = str(getattr(layer, "mode", "LSTM")).lower()
    if mode not in MODES:
        raise ValueError(f"layer mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def nn_class(mode: str) -> type[nn.RNNBase]:
    """The torch.nn class computing ``mode`` (``nn.RNN`` for both nonlinearities)."""
    return {"lstm": nn.LSTM, "gru": nn.GRU}.get(mode, nn.RNN)


def nn_kwargs(mode: str) -> dict:
    """Extra constructor arguments of :func:`nn_class` for ``mode`` (the RNN's nonlinearity)."""
    return {"nonlinearity": mode.split("_", 1)[1]} if mode.startswith("rnn_") else {}
