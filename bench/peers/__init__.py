"""Peers: other people's fused or compiled RNNs, benchmarked beside ours from the same weights.

Each peer is a module of its own with one job (``compiled``, ``torchrl_triton``, ``flashrnn``):

- ``available(device, dtype, cell, config) -> str | None``: None where it can run this case, else
  the reason it cannot (not installed, no CUDA, this Triton, a cell or configuration it lacks, or
  one it would hand to cuDNN — refused, never timed under the peer's name);
- ``build(weights, device, dtype, cell) -> nn.Module``: a layer holding exactly ``weights``
  (PyTorch layer-0 names, as parameters under those names, so their gradients read as torch.nn's)
  with torch.nn's calling convention: ``x (T, B, I)``, state ``(h0, c0)`` (LSTM) or ``h0``, each
  ``(1, B, H)``; returns ``(output (T, B, H), state)`` in the same layout. The input projection
  runs inside the layer for every peer, as it does inside nn.LSTM and ours;
- ``backend(device, cell) -> str``: what runs under the peer's name (inductor, triton,
  cuda_fused, ...), recorded beside its numbers.

Install them with ``pip install lstm-triton[peers]``; the suite runs without them (their cases are
skipped with the reason).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

PEERS = ("compiled", "torchrl-triton", "flashrnn")
INSTALL_HINT = "pip install lstm-triton[peers]"


@dataclass(frozen=True)
class LayerConfig:
    """The layer configuration of a case, beyond its cell: the bench times one unidirectional
    layer without projection; a peer refuses what it would not run itself."""

    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    seq_len: int | None = None  # the case's T, where a peer's cost depends on it (a compiled loop unrolls it)

    @property
    def single_layer(self) -> bool:
        return self.num_layers == 1 and not self.bidirectional and not self.proj_size


SINGLE_LAYER = LayerConfig()


def peer_module(name: str):
    """The module of peer ``name`` (ValueError naming the peers otherwise)."""
    if name == "compiled":
        from bench.peers import compiled as module
    elif name == "torchrl-triton":
        from bench.peers import torchrl_triton as module
    elif name == "flashrnn":
        from bench.peers import flashrnn as module
    else:
        raise ValueError(f"peer must be one of {', '.join(PEERS)}, got {name!r}")
    return module


# ------------------------------------------------------------------------------- fp32 precision

FP32_PRECISIONS = ("ieee", "tf32")


@contextmanager
def fp32_precision(mode: str):
    """Set every switch an fp32 RNN follows to ``mode`` ("ieee" or "tf32") and restore them after:
    cuDNN's (nn.LSTM), cuBLAS matmul's (the input projections, inductor's GEMMs, our launchers'
    ``dot_precision``) and with it ``torch.get_float32_matmul_precision()`` ("highest" / "high",
    which TorchRL's "auto" would read; the TorchRL peer is also passed the mode explicitly)."""
    if mode not in FP32_PRECISIONS:
        raise ValueError(f"mode must be one of {', '.join(FP32_PRECISIONS)}, got {mode!r}")
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32, torch.get_float32_matmul_precision())
    cudnn.allow_tf32 = matmul.allow_tf32 = mode == "tf32"
    torch.set_float32_matmul_precision("high" if mode == "tf32" else "highest")
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def current_fp32_mode() -> str:
    """"tf32" when the matmul switch allows TF32, else "ieee" (what :func:`fp32_precision` set)."""
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def precision_label(dtype: torch.dtype, device) -> str:
    """The precision a layer case ran in, for the CSV: bf16, or fp32-ieee / fp32-tf32 — on a CPU
    always fp32-ieee (there is no TF32 there, whatever the switches say)."""
    if dtype != torch.float32:
        return str(dtype).removeprefix("torch.").replace("bfloat16", "bf16").replace("float16", "fp16")
    return "fp32-ieee" if torch.device(device).type == "cpu" else f"fp32-{current_fp32_mode()}"


# ------------------------------------------------------------------------------- shared helpers


def nn_parameters(module: torch.nn.Module, weights: dict[str, torch.Tensor], device, dtype) -> None:
    """Register ``weights`` (layer 0, PyTorch names) on ``module`` as parameters of those names,
    moved to ``device``/``dtype``: their gradients then read as torch.nn's."""
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        if name not in weights:
            raise ValueError(f"weights: expected {name} (PyTorch layer-0 names), got {sorted(weights)}")
        value = weights[name].detach().to(device=device, dtype=dtype).clone()
        module.register_parameter(name, torch.nn.Parameter(value))


def split_state(cell: str, hx):
    """``(h0, c0)`` of torch.nn's state argument (c0 None for GRU/RNN), each ``(1, B, H)``."""
    if cell == "lstm":
        return hx[0], hx[1]
    return hx, None


def join_state(cell: str, h_n: torch.Tensor, c_n: torch.Tensor | None):
    """torch.nn's returned state from ``h_n`` (and the LSTM's ``c_n``), each ``(1, B, H)``."""
    return (h_n, c_n) if cell == "lstm" else h_n
