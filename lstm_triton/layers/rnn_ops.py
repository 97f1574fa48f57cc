"""The GRU / plain-RNN recurrence as two PyTorch operators (the LSTM's are in ``ops.py``).

``torch.ops.lstm_triton.rnn_recurrence(xp, h0, w_hh, b_hh, mode, fusion) -> (y, h_all, acts)``
    mode: nn.RNNBase.mode, ``GRU``, ``RNN_TANH`` or ``RNN_RELU`` (G = 3 gates for GRU, 1 for RNN);
    xp (T,B,G·H) fp32 = x W_ihᵀ + b_ih, h0 (B,H) dt, w_hh (G·H,H) dt, b_hh (G·H,) dt or None (added
    to the recurrent product: GRU's b_hn sits inside r ⊙ (·));
    y (T,B,H) dt, and the saved intermediates h_all (T+1,B,H) fp32 (h_0..h_T) and acts (T,B,4H) fp32
    (GRU: r, z, n, hn; RNN: (T,B,0)); not differentiable.
``torch.ops.lstm_triton.rnn_recurrence_backward(dy, w_hh, h_all, acts, mode, fusion) -> (dG, dh0)``
    dy (T,B,H) fp32 already holding dL/dh_n in its last step; dG (T,B,W) dt: GRU W = 6H (input-side
    pre-activation grads r, z, n, then recurrent-side ones), RNN W = H (both sides); dh0 (B,H) fp32.

``fusion`` is resolved by :func:`lstm_triton.layers.backend.choose_fusion`, as for the LSTM: GRU and RNN
run at the cell, step and persistent levels (``auto`` is persistent when its launch fits, else step,
logged; bf16 under the interpreter goes to cell). Fake implementations give symbolic shapes
(torch.compile, export).
ValueError for an unknown ``mode`` or ``fusion``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels.cell_math import CELL_IDS, GATES, GRU, SAVED
from ..kernels.lstm_cell import rnn_cell_backward, rnn_cell_forward
from ..kernels.lstm_persistent import rnn_persistent_backward, rnn_persistent_forward
from ..kernels.lstm_step import rnn_step_backward, rnn_step_forward
from .backend import choose_fusion
from .ops import _check_fusion, _owned

MODES = ("GRU", "RNN_TANH", "RNN_RELU")
FORWARD = {"cell": rnn_cell_forward, "step": rnn_step_forward, "persistent": rnn_persistent_forward}
BACKWARD = {"cell": rnn_cell_backward, "step": rnn_step_backward, "persistent": rnn_persistent_backward}


def _cell(mode: str) -> int:
    if mode not in MODES:
        raise ValueError(f"lstm_triton::rnn_recurrence: mode must be one of {', '.join(MODES)}, got {mode!r}")
    return CELL_IDS[mode]


def _dims(xp: Tensor, mode: str) -> tuple[int, int, int, int]:
    """(T, B, H, saved columns) of a call."""
    T, B, GH = xp.shape
    cell = _cell(mode)
    H = GH // GATES[cell]
    return T, B, H, SAVED[cell] * H


@torch.library.custom_op("lstm_triton::rnn_recurrence", mutates_args=())
def rnn_recurrence(xp: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None, mode: str,
                   fusion: str) -> tuple[Tensor, Tensor, Tensor]:
    _check_fusion(fusion)
    T, B, H, S = _dims(xp, mode)
    dt = w_hh.dtype
    if B * H == 0:  # nothing to compute (the kernels cannot launch an empty grid)
        return xp.new_empty((T, B, H), dtype=dt), h0.float().expand(T + 1, B, H).clone(), xp.new_empty((T, B, S))
    level = choose_fusion(fusion, B, H, dt, xp.device, cell=mode)
    y, h_all, acts = FORWARD[level](xp, h0, w_hh, b_hh, CELL_IDS[mode])
    return _owned(y), h_all, acts


@rnn_recurrence.register_fake
def _rnn_recurrence_fake(xp, h0, w_hh, b_hh, mode, fusion):
    T, B, H, S = _dims(xp, mode)
    return (xp.new_empty((T, B, H), dtype=w_hh.dtype), xp.new_empty((T + 1, B, H), dtype=torch.float32),
            xp.new_empty((T, B, S), dtype=torch.float32))


def _dg_width(mode: str, H: int) -> int:
    cell = _cell(mode)
    return GATES[cell] * H * (2 if cell == GRU else 1)


@torch.library.custom_op("lstm_triton::rnn_recurrence_backward", mutates_args=())
def rnn_recurrence_backward(dy: Tensor, w_hh: Tensor, h_all: Tensor, acts: Tensor, mode: str,
                            fusion: str) -> tuple[Tensor, Tensor]:
    _check_fusion(fusion)
    T, B, H = dy.shape
    dt = w_hh.dtype
    if B * H == 0:
        return dy.new_zeros((T, B, _dg_width(mode, H)), dtype=dt), dy.new_zeros((B, H))
    level = choose_fusion(fusion, B, H, dt, dy.device, cell=mode)
    return BACKWARD[level](dy.contiguous(), w_hh, h_all, acts, CELL_IDS[mode])


@rnn_recurrence_backward.register_fake
def _rnn_recurrence_backward_fake(dy, w_hh, h_all, acts, mode, fusion):
    T, B, H = dy.shape
    return dy.new_empty((T, B, _dg_width(mode, H)), dtype=w_hh.dtype), dy.new_empty((B, H), dtype=torch.float32)


def _register_autograd() -> None:
    from .rnn_autograd import rnn_backward_formula, rnn_setup_context

    rnn_recurrence.register_autograd(rnn_backward_formula, setup_context=rnn_setup_context)


_register_autograd()
