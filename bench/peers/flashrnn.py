"""The ``flashrnn`` peer: FlashRNN's fused LSTM, GRU and tanh RNN (``pip install lstm-triton[peers]``).

FlashRNN 1.0 (NX-AI/flashrnn): ``flashrnn(Wx, R, b, states, function, backend, dtype)`` runs one
unidirectional layer of ``function`` ("lstm", "gru", "elman" — the tanh RNN) on the input gates
``Wx (B, T, G, NH, D)`` computed outside it, recurrent weights ``R (G, NH, D, D)``, biases
``b (G', NH, D)`` and initial states ``(S, B, 1, NH, D)``; it returns every step's states
``(S, B, T, NH, D)`` and the last ``(S, B, 1, NH, D)``. With one head (NH=1, D=H) torch.nn's
weights convert exactly (:func:`flashrnn_weights`, :func:`input_gates`; checked in float64 against
torch.nn with FlashRNN's PyTorch reference backend ``vanilla``):

- LSTM: gate order [i, f, z, o] is nn's [i, f, g, o]: ``Wx = x W_ih^T`` viewed (B, T, 4, 1, H),
  ``R = W_hh`` viewed (4, 1, H, H), ``b = b_ih + b_hh`` viewed (4, 1, H), states ``(h0, c0)``.
- GRU: ``Wx`` in nn's [r, z, n]; ``R`` in FlashRNN's order [n, r, z] (its recurrent n part comes
  first); four bias rows ``[b_hn, b_ir + b_hr, b_iz + b_hz, b_in]`` (b_hn sits inside the reset
  product, as in nn.GRU).
- RNN (tanh): one gate, ``b = b_ih + b_hh``.

The layer does the input projection itself (``F.linear``, inside the timed call, as nn.LSTM does),
so every provider is timed on the same work. Backends: ``cuda_fused`` (LSTM, RNN) and ``cuda``
(GRU: FlashRNN itself moves the GRU off cuda_fused) compile with nvcc on first use per
configuration — the first-call column shows it; ``triton_fused`` (LSTM only) needs
``tl.make_block_ptr``, which Triton 3.9 removed; ``vanilla`` is FlashRNN's unfused PyTorch loop, a
reference, never timed under FlashRNN's name. The kernel dtype is set explicitly (FlashRNN's
default is bf16): float32 for fp32 layers, bfloat16 for bf16.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import torch
import torch.nn.functional as F
from torch import nn

from bench.peers import INSTALL_HINT, SINGLE_LAYER, LayerConfig, join_state, nn_parameters, split_state

FUNCTIONS = {"lstm": "lstm", "gru": "gru", "rnn": "elman"}  # bench cell -> FlashRNN function
GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # input gates (Wx); the GRU has four bias rows
STATES = {"lstm": 2, "gru": 1, "rnn": 1}
KERNEL_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float64: "float64"}


def flashrnn_weights(cell: str, w_ih, w_hh, b_ih, b_hh) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R, b)`` in FlashRNN's one-head layout from torch.nn's layer-0 weights of ``cell``
    (differentiable: gradients flow back to torch.nn's tensors). ``w_ih`` is not needed for R/b
    but is checked for the cell's gate count. ValueError for an unknown cell or mis-shaped weights."""
    if cell not in FUNCTIONS:
        raise ValueError(f"cell must be one of {', '.join(FUNCTIONS)}, got {cell!r}")
    H = w_hh.shape[-1]
    G = GATES[cell]
    if tuple(w_hh.shape) != (G * H, H) or w_ih.shape[0] != G * H:
        raise ValueError(f"weights: a {cell} layer of hidden size {H} has weight_hh ({G * H}, {H}), got "
                         f"weight_ih {tuple(w_ih.shape)}, weight_hh {tuple(w_hh.shape)}")
    if cell == "gru":
        w_r, w_z, w_n = w_hh.chunk(3)
        b_ir, b_iz, b_in = b_ih.chunk(3)
        b_hr, b_hz, b_hn = b_hh.chunk(3)
        R = torch.cat([w_n, w_r, w_z]).view(3, 1, H, H)
        b = torch.stack([b_hn, b_ir + b_hr, b_iz + b_hz, b_in]).view(4, 1, H)
        return R, b
    return w_hh.view(G, 1, H, H), (b_ih + b_hh).view(G, 1, H)


def input_gates(cell: str, x_bt: torch.Tensor, w_ih: torch.Tensor) -> torch.Tensor:
    """FlashRNN's ``Wx (B, T, G, 1, H)``: the input projection of batch-first ``x_bt (B, T, I)``
    without bias (the biases go to ``b``)."""
    B, T, _ = x_bt.shape
    return F.linear(x_bt, w_ih).view(B, T, GATES[cell], 1, w_ih.shape[0] // GATES[cell])


def _has_nvcc() -> bool:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    return shutil.which("nvcc") is not None or os.path.exists(os.path.join(home, "bin", "nvcc"))


def _triton_has_block_ptr() -> bool:
    try:
        import triton.language as tl
    except ImportError:
        return False
    return hasattr(tl, "make_block_ptr")


def backend(device=None, cell: str = "lstm") -> str | None:
    """FlashRNN's fastest backend that can run ``cell`` here (None: none can): cuda_fused
    (cuda for the GRU) where nvcc is found, else triton_fused for the LSTM where Triton still
    has tl.make_block_ptr."""
    if _has_nvcc():
        return "cuda" if cell == "gru" else "cuda_fused"
    if cell == "lstm" and _triton_has_block_ptr():
        return "triton_fused"
    return None


def available(device, dtype: torch.dtype, cell: str, config: LayerConfig = SINGLE_LAYER) -> str | None:
    """None where a fused FlashRNN backend can run this case, else why not."""
    if cell not in FUNCTIONS:
        return "FlashRNN has LSTM, GRU and tanh (Elman) RNN, no relu RNN"
    if not config.single_layer:
        return "FlashRNN runs one unidirectional layer without projection"
    if torch.device(device).type != "cuda":
        return ("its fused backends need CUDA (cuda/cuda_fused compile with nvcc; triton_fused targets a GPU); "
                "its vanilla backend is an unfused PyTorch reference, not timed as FlashRNN")
    if importlib.util.find_spec("flashrnn") is None:
        return f"flashrnn is not installed ({INSTALL_HINT})"
    if dtype not in (torch.float32, torch.bfloat16):
        return f"the bench compares float32 and bfloat16 layers, not {dtype}"
    if backend(device, cell) is None:
        return ("no fused backend runs here: nvcc not found for cuda/cuda_fused, and triton_fused needs "
                "tl.make_block_ptr (removed in Triton 3.9)" + ("" if cell == "lstm" else " and has LSTM only"))
    return None


class FlashRNNLayer(nn.Module):
    """One FlashRNN layer of ``cell`` holding torch.nn's layer-0 weights under their names.

    ``forward(x (T, B, I), hx)`` -> ``(output (T, B, H), state)`` in torch.nn's layout; ``hx``
    ``(h0, c0)`` (LSTM) or ``h0``, each ``(1, B, H)``. ``flashrnn_backend``: FlashRNN's backend
    name ("vanilla" in the CPU tests); ``fn``: the ``flashrnn`` function (FlashRNN's by default)."""

    def __init__(self, weights: dict[str, torch.Tensor], device, dtype: torch.dtype, cell: str = "lstm",
                 flashrnn_backend: str | None = None, fn=None):
        super().__init__()
        if cell not in FUNCTIONS:
            raise ValueError(f"cell must be one of {', '.join(FUNCTIONS)}, got {cell!r}")
        if dtype not in KERNEL_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(map(str, KERNEL_DTYPES))}, got {dtype}")
        self.cell, self.kernel_dtype = cell, KERNEL_DTYPES[dtype]
        self.flashrnn_backend = flashrnn_backend or backend(device, cell)
        if self.flashrnn_backend is None:
            raise ValueError(f"no FlashRNN backend can run a {cell} here: {available(device, dtype, cell)}")
        nn_parameters(self, weights, device, dtype)
        if fn is None:
            from flashrnn import flashrnn as fn
        self.fn = fn

    def forward(self, x: torch.Tensor, hx):
        T, B, _ = x.shape
        h0, c0 = split_state(self.cell, hx)
        H = self.weight_hh_l0.shape[-1]
        Wx = input_gates(self.cell, x.transpose(0, 1), self.weight_ih_l0)
        R, b = flashrnn_weights(self.cell, self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0)
        states = (h0 if c0 is None else torch.cat([h0, c0])).reshape(STATES[self.cell], B, 1, 1, H)
        steps, last = self.fn(Wx, R, b, states=states, function=FUNCTIONS[self.cell],
                              backend=self.flashrnn_backend, dtype=self.kernel_dtype)
        out = steps[0, :, :, 0, :].transpose(0, 1)  # (B, T, H) of h -> (T, B, H)
        h_n = last[0, :, 0, 0, :].unsqueeze(0)
        c_n = last[1, :, 0, 0, :].unsqueeze(0) if self.cell == "lstm" else None
        return out, join_state(self.cell, h_n, c_n)


def build(weights: dict[str, torch.Tensor], device, dtype: torch.dtype, cell: str = "lstm") -> nn.Module:
    return FlashRNNLayer(weights, device, dtype, cell)
