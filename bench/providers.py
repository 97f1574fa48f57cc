"""The benchmarked implementations ("providers"), built from identical weights, for every cell.

Each provider turns one set of PyTorch-layout layer-0 weights of a cell (``lstm``, ``gru``, ``rnn``
— tanh —, ``rnn_relu``; see bench/cases.py) into a layer with torch.nn's calling convention
(time-major ``(T, B, I)`` input; state ``(h0, c0)`` for the LSTM, ``h0`` for GRU and RNN, each
``(1, B, H)``). A provider that cannot run here says why (``unavailable``), and its benchmarks are
skipped with that reason.

A ``triton-<level>`` provider asks for that fusion level; the layer may run another one (bf16
under the interpreter goes to ``cell``, and a shape whose weights do not fit on chip leaves the
persistent level). :func:`fusion_ran` asks the library's own decision
(:func:`lstm_triton.layers.backend.choose_fusion`) which level a call of that shape runs, so the
reports say what ran instead of what was asked for.

Peers (:data:`PEER_PROVIDERS`, bench/peers/): ``compiled`` (torch.compile of the naive loop),
``torchrl-triton`` (TorchRL's Triton LSTM/GRU) and ``flashrnn`` (FlashRNN's fused kernels), built
from the same weights with the same calling convention; :func:`status` gives a peer's reason where
it cannot run a case (not installed, no CUDA, a cell it lacks), and :func:`backend_ran` what runs
under its name. They are layer providers only (the char LM trains with ours, naive and nn).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import lstm_triton
from bench.cases import cell_args
from bench.peers import PEERS, LayerConfig, peer_module
from lstm_triton.charlm.cells import cell_mode, nn_class, nn_kwargs
from lstm_triton.charlm.impls import layer_from_weights
from lstm_triton.kernels.launch_config import interpreter_on

PROVIDERS = ("naive", "nn", "triton-cell", "triton-step", "triton-persistent")
PEER_PROVIDERS = PEERS  # compiled, torchrl-triton, flashrnn: one layer only, no char-LM run
LAYER_PROVIDERS = PROVIDERS + PEER_PROVIDERS
IMPL_OF = {"naive": ("naive", "auto"), "nn": ("nn", "auto"), "triton-cell": ("triton", "cell"),
           "triton-step": ("triton", "step"), "triton-persistent": ("triton", "persistent")}


@dataclass(frozen=True)
class ProviderStatus:
    available: bool
    interpreted: bool  # Triton interpreter on CPU: a correctness run, never a performance figure
    reason: str = ""


def status(provider: str, device: torch.device, dtype: torch.dtype, cell: str = "lstm",
           seq_len: int | None = None) -> ProviderStatus:
    """Whether ``provider`` can run a ``cell`` layer of ``dtype`` on ``device`` (for sequences of
    length ``seq_len``, where a peer's cost depends on it), and why not."""
    if provider not in LAYER_PROVIDERS:
        raise ValueError(f"provider must be one of {', '.join(LAYER_PROVIDERS)}, got {provider!r}")
    if provider in PEER_PROVIDERS:
        reason = peer_module(provider).available(torch.device(device), dtype, cell, LayerConfig(seq_len=seq_len))
        return ProviderStatus(reason is None, False, reason or "")
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


def torch_mode(cell: str) -> str:
    """nn.RNNBase.mode of a benchmark cell: LSTM, GRU, RNN_TANH, RNN_RELU."""
    return cell_mode(*cell_args(cell)).upper()


def fusion_ran(provider: str, cell: str, batch: int, hidden: int, dtype: torch.dtype, device) -> str | None:
    """The fusion level a ``provider`` layer of ``cell`` runs for a (batch, hidden) call — the
    library's own decision for the level the provider asks for; None for naive, nn and the peers."""
    if provider in PEER_PROVIDERS:
        return None
    impl, fusion = IMPL_OF[provider]
    if impl != "triton":
        return None
    from lstm_triton.layers.backend import choose_fusion

    return choose_fusion(fusion, batch, hidden, dtype, torch.device(device), cell=torch_mode(cell))


def backend_ran(provider: str, cell: str, device) -> str | None:
    """What runs under a peer's name (inductor, triton, cuda_fused, ...); None for ours, naive and nn."""
    if provider not in PEER_PROVIDERS:
        return None
    return peer_module(provider).backend(torch.device(device), cell)


def build_layer(provider: str, weights: dict[str, torch.Tensor], device, dtype, cell: str = "lstm") -> nn.Module:
    """A single-layer ``cell`` of ``provider`` holding exactly ``weights`` (PyTorch layer-0 names)."""
    if provider in PEER_PROVIDERS:
        return peer_module(provider).build(weights, torch.device(device), dtype, cell)
    impl, fusion = IMPL_OF[provider]
    name, nonlinearity = cell_args(cell)
    layer = layer_from_weights(impl, weights, fusion, cell=name, nonlinearity=nonlinearity)
    return layer.to(device=device, dtype=dtype)


def reference_weights(input_size: int, hidden: int, seed: int = 0, cell: str = "lstm") -> dict[str, torch.Tensor]:
    """torch.nn's default initialisation of ``cell`` (nn.LSTM / nn.GRU / nn.RNN), drawn from a
    fixed seed (float32, CPU)."""
    mode = cell_mode(*cell_args(cell))
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layer = nn_class(mode)(input_size, hidden, **nn_kwargs(mode))
        return {k: v.detach().clone() for k, v in layer.state_dict().items()}
    finally:
        torch.random.set_rng_state(gen_state)
