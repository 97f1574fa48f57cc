"""The ``torchrl-triton`` peer: TorchRL's fused Triton LSTM and GRU (``pip install lstm-triton[peers]``).

TorchRL 0.14 (``torchrl/modules/tensordict_module/_rnn_triton.py``; public as
``LSTMModule(..., recurrent_backend="triton")``) has functional single-layer kernels,
``lstm_triton(x, hidden, cell, w_ih, w_hh, b_ih, b_hh, is_init, compute_dtype, *, input_precision)``
and ``gru_triton(x, hidden, w_ih, ...)``, on batch-first tensors: ``x (B, T, I)``, per-step reset
states ``hidden``/``cell (B, T, H)`` whose step 0 is the initial state, a reset mask ``is_init
(B, T)``. They take nn.LSTM's / nn.GRU's weights unchanged and do the input projection
(``F.linear``) themselves; they return ``(h_steps, c_steps, h_final, c_final)`` (LSTM) or
``(out, h_final)`` (GRU), finals ``(B, H)``.

The adapter here only moves layouts: x to batch-first, h0/c0 broadcast over T (no resets: the mask
is all False, so steps past 0 are never read and get no gradient), outputs back to time-major.

What it does not run is refused, not timed: the tanh/relu RNN (TorchRL has none), a CPU device
(every launch sits under ``torch.cuda.device``, its autotuner benchmarks on a GPU and its kernels
call ``tl.extra.cuda.libdevice.tanh``, which the Triton interpreter cannot run: tried with TorchRL
0.14.1, Triton 3.9), and bidirectional or projected layers (its module wrappers hand those to
cuDNN). Its fp32 precision is passed explicitly (``input_precision``: the bench's mode, "ieee" or
"tf32"), so it never follows a default of its own.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from bench.peers import (
    INSTALL_HINT,
    SINGLE_LAYER,
    LayerConfig,
    current_fp32_mode,
    join_state,
    nn_parameters,
    split_state,
)

CELLS = ("lstm", "gru")


def available(device, dtype: torch.dtype, cell: str, config: LayerConfig = SINGLE_LAYER) -> str | None:
    """None where TorchRL's Triton kernel can run this case, else why not."""
    if cell not in CELLS:
        return "TorchRL's Triton backend has LSTM and GRU kernels only"
    if config.bidirectional or config.proj_size:
        return "TorchRL hands bidirectional and projected layers to cuDNN: refused, not timed as TorchRL's"
    if torch.device(device).type != "cuda":
        return ("runs on CUDA only (launches under torch.cuda.device; its autotuner needs a GPU; "
                "libdevice.tanh has no interpreter path)")
    if importlib.util.find_spec("torchrl") is None:
        return f"torchrl is not installed ({INSTALL_HINT})"
    if dtype != torch.float32:
        return ("TorchRL's kernels take fp32 tensors (compute_dtype=bfloat16 casts only the matmul operands): "
                "no bf16 layer to compare")
    return None


def backend(device=None, cell: str = "lstm") -> str:
    return "triton"


def kernel(cell: str):
    """TorchRL's functional kernel for ``cell`` (ImportError without torchrl)."""
    from torchrl.modules.tensordict_module import _rnn_triton

    return _rnn_triton.lstm_triton if cell == "lstm" else _rnn_triton.gru_triton


class TorchRLLayer(nn.Module):
    """One TorchRL Triton layer of ``cell`` holding torch.nn's layer-0 weights under their names.

    ``forward(x (T, B, I), hx)`` -> ``(output (T, B, H), state)`` in torch.nn's layout; ``hx``
    ``(h0, c0)`` (LSTM) or ``h0`` (GRU), each ``(1, B, H)``. ``fn`` replaces TorchRL's kernel (a
    function of the same signature: the CPU tests give a float64 reference of its contract)."""

    def __init__(self, weights: dict[str, torch.Tensor], device, dtype: torch.dtype, cell: str = "lstm", fn=None):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        self.cell = cell
        nn_parameters(self, weights, device, dtype)
        self.fn = fn if fn is not None else kernel(cell)

    def forward(self, x: torch.Tensor, hx):
        T, B, _ = x.shape
        h0, c0 = split_state(self.cell, hx)
        x_bt = x.transpose(0, 1)
        steps = lambda s: s[0].unsqueeze(1).expand(B, T, s.shape[-1])  # (1, B, H) -> (B, T, H), step 0 = s
        is_init = torch.zeros(B, T, dtype=torch.bool, device=x.device)
        weights = (self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0)
        compute_dtype = torch.float32  # available() refuses bf16 layers
        precision = current_fp32_mode()
        if self.cell == "lstm":
            out, _, h_n, c_n = self.fn(x_bt, steps(h0), steps(c0), *weights, is_init, compute_dtype,
                                       input_precision=precision)
            return out.transpose(0, 1), join_state("lstm", h_n.unsqueeze(0), c_n.unsqueeze(0))
        out, h_n = self.fn(x_bt, steps(h0), *weights, is_init, compute_dtype, input_precision=precision)
        return out.transpose(0, 1), h_n.unsqueeze(0)


def build(weights: dict[str, torch.Tensor], device, dtype: torch.dtype, cell: str = "lstm") -> nn.Module:
    return TorchRLLayer(weights, device, dtype, cell)
