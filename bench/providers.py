"""The benchmarked implementations ("providers"), built from identical weights.

Each provider turns one set of nn.LSTM-layout weights into a layer with nn.LSTM's calling
convention (time-major ``(T, B, I)`` input, ``(h0, c0)`` of ``(1, B, H)``). A provider that
cannot run here says why (``unavailable``), and its benchmarks are skipped with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import lstm_triton
from lstm_triton.charlm.impls import layer_from_weights
from lstm_triton.kernels.launch_config import interpreter_on

PROVIDERS = ("naive", "nn", "triton-cell", "triton-step", "triton-persistent")
IMPL_OF = {"naive": ("naive", "auto"), "nn": ("nn", "auto"), "triton-cell": ("triton", "cell"),
           "triton-step": ("triton", "step"), "triton-persistent": ("triton", "persistent")}


@dataclass(frozen=True)
class ProviderStatus:
    available: bool
    interpreted: bool  # Triton interpreter on CPU: a correctness run, never a performance figure
    reason: str = ""


def status(provider: str, device: torch.device, dtype: torch.dtype) -> ProviderStatus:
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    if not provider.startswith("triton"):
        return ProviderStatus(True, False)
    fusion = IMPL_OF[provider][1]
    if fusion not in lstm_triton.layers.backend.FUSIONS:
        return ProviderStatus(False, False, f"fusion level '{fusion}' is not implemented yet")
    if device.type == "cuda":
        return ProviderStatus(True, False)
    if not interpreter_on():
        return ProviderStatus(False, False, "no CUDA device and TRITON_INTERPRET is off")
    if dtype == torch.bfloat16 and fusion != "cell":
        return ProviderStatus(False, True, "the Triton interpreter has no bf16 tl.dot")
    return ProviderStatus(True, True)


def build_layer(provider: str, weights: dict[str, torch.Tensor], device, dtype) -> nn.Module:
    """A single-layer LSTM of ``provider`` holding exactly ``weights`` (nn.LSTM layer-0 names)."""
    impl, fusion = IMPL_OF[provider]
    return layer_from_weights(impl, weights, fusion).to(device=device, dtype=dtype)


def reference_weights(input_size: int, hidden: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """nn.LSTM's default initialisation, drawn from a fixed seed (float32, CPU)."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return {k: v.detach().clone() for k, v in nn.LSTM(input_size, hidden).state_dict().items()}
    finally:
        torch.random.set_rng_state(gen_state)
