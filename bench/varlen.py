"""Variable-length batches: inputs, the timed operation per provider, and the float64 check.

A batch of B sequences whose lengths are drawn, from a fixed seed, uniformly from the integers in
[T/4, T] (:func:`draw_lengths`). The same data goes to every provider:

``nn``                nn.LSTM on the PackedSequence (cuDNN's standard algorithm for packed input)
``nn-padded``         nn.LSTM on the same data padded, lengths ignored (the floor cuDNN reaches when it
                      may waste work on padding; its h_n/c_n are not the rows' last states)
``triton-<level>``    lstm_triton.LSTM at that fusion level on the PackedSequence
``triton-padded``     lstm_triton.LSTM (fusion auto) on the padded tensor with ``lengths=``
``triton-auto``       lstm_triton.LSTM (fusion auto) on the PackedSequence (the GPU check's "ours")

Throughput counts real tokens only: ``sum(lengths) / time``. Every provider is compared in packed
form (padded outputs and input gradients are packed the same way first) with nn.LSTM in float64
on the PackedSequence: output data, h_n, c_n and, for forward+backward, every gradient, with an
upstream gradient on the output, h_n and c_n.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from bench.measure import rel_err, synchronize
from bench.providers import ProviderStatus, reference_weights, status

VARLEN_PROVIDERS = ("nn", "nn-padded", "triton-cell", "triton-step", "triton-persistent", "triton-padded")
VARLEN_MODES = ("forward", "forward_backward")
# triton-auto (fusion auto on the PackedSequence) is the GPU check's "ours packed"; the suite times each level.
FUSION_OF = {"triton-cell": "cell", "triton-step": "step", "triton-persistent": "persistent",
             "triton-auto": "auto", "triton-padded": "auto"}
KNOWN_PROVIDERS = ("nn", "nn-padded", *FUSION_OF)
PADDED = ("nn-padded", "triton-padded")  # take the padded tensor; the rest take the PackedSequence
LENGTHS_SEED = 0


def draw_lengths(T: int, B: int, seed: int = LENGTHS_SEED) -> torch.Tensor:
    """``(B,)`` int64 on the CPU: lengths uniform in [ceil(T/4), T] from ``seed``.

    Raises ValueError naming T or B when either is below 1."""
    if T < 1 or B < 1:
        raise ValueError(f"T and B must be at least 1, got T={T}, B={B}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-(-T // 4), T + 1, (B,), generator=gen, dtype=torch.int64)


@dataclass
class VarlenInputs:
    """One variable-length batch on ``device`` in ``dtype`` (the gradient leaves require grad).

    ``x`` padded ``(T_max, B, I)`` (zeros past each length, T_max = max(lengths)); ``packed`` the
    same data as a PackedSequence (unsorted lengths: ``enforce_sorted=False``) whose ``data``
    ``(N, I)``, N = sum(lengths), is its own leaf; ``lengths (B,)`` int64 on the CPU; ``h0, c0``
    ``(1, B, H)``; upstream gradients ``dy_data (N, H)``, ``dy`` (the same padded, zeros past each
    length), ``dh, dc (1, B, H)``."""

    x: torch.Tensor
    packed: PackedSequence
    lengths: torch.Tensor
    h0: torch.Tensor
    c0: torch.Tensor
    dy_data: torch.Tensor
    dy: torch.Tensor
    dh: torch.Tensor
    dc: torch.Tensor

    @property
    def real_tokens(self) -> int:
        return int(self.lengths.sum())

    def pack_like(self, padded: torch.Tensor) -> torch.Tensor:
        """``padded (T_max, B, *)`` -> the ``(N, *)`` data packed exactly as ``self.packed``."""
        return pack_padded_sequence(padded, self.lengths, enforce_sorted=False).data

    def leaves(self) -> list[torch.Tensor]:
        return [self.x, self.packed.data, self.h0, self.c0]


def make_varlen_inputs(T: int, B: int, I: int, H: int, device, dtype, seed: int = 0) -> VarlenInputs:
    """Data drawn in float64 from ``seed`` (lengths from :data:`LENGTHS_SEED`), then cast: every
    dtype and device sees the same numbers."""
    lengths = draw_lengths(T, B)
    T_max = int(lengths.max())
    gen = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randn(shape, generator=gen, dtype=torch.float64)
    active = (torch.arange(T_max)[:, None] < lengths[None, :])[..., None]  # (T_max, B, 1)
    x = draw(T_max, B, I) * active
    h0, c0, dh, dc = draw(1, B, H), draw(1, B, H), draw(1, B, H), draw(1, B, H)
    dy = draw(T_max, B, H) * active
    move = lambda t, grad=False: t.to(device=device, dtype=dtype).requires_grad_(grad)
    x = move(x, True)
    packed = pack_padded_sequence(x.detach(), lengths, enforce_sorted=False)
    packed = PackedSequence(packed.data.detach().requires_grad_(), packed.batch_sizes, packed.sorted_indices,
                            packed.unsorted_indices)
    dy = move(dy)
    dy_data = pack_padded_sequence(dy, lengths, enforce_sorted=False).data
    return VarlenInputs(x, packed, lengths, move(h0, True), move(c0, True), dy_data, dy, move(dh), move(dc))


def varlen_status(provider: str, device: torch.device, dtype: torch.dtype) -> ProviderStatus:
    """As :func:`bench.providers.status`; ``nn-padded`` is nn, ``triton-padded`` and ``triton-auto``
    need what the step level needs (the interpreter has no bf16 tl.dot for any level but cell).

    Raises ValueError naming ``provider`` when it is not one of :data:`KNOWN_PROVIDERS`."""
    if provider not in KNOWN_PROVIDERS:
        raise ValueError(f"provider must be one of {', '.join(KNOWN_PROVIDERS)}, got {provider!r}")
    same_as = {"nn-padded": "nn", "triton-padded": "triton-step", "triton-auto": "triton-step"}
    return status(same_as.get(provider, provider), device, dtype)


def build_varlen_layer(provider: str, weights: dict[str, torch.Tensor], device, dtype) -> nn.Module:
    """A one-layer nn.LSTM or lstm_triton.LSTM holding exactly ``weights`` (nn.LSTM layer-0 names)."""
    import lstm_triton

    four_h, input_size = weights["weight_ih_l0"].shape
    if provider.startswith("nn"):
        layer = nn.LSTM(input_size, four_h // 4)
    else:  # backend="triton": never a silent fallback to torch's kernel
        layer = lstm_triton.LSTM(input_size, four_h // 4, fusion=FUSION_OF[provider], backend="triton")
    layer.load_state_dict(weights)
    return layer.to(device=device, dtype=dtype)


def run_provider(provider: str, layer: nn.Module, inputs: VarlenInputs):
    """One forward pass: ``(output data (N, H) packed like the input, h_n, c_n (1, B, H))``, plus
    the raw output (to backpropagate from). ``nn-padded``'s h_n/c_n are its states after T_max
    steps (lengths ignored)."""
    hx = (inputs.h0, inputs.c0)
    if provider == "nn-padded":
        out, (h, c) = layer(inputs.x, hx)
        return out, h, c
    if provider == "triton-padded":
        out, (h, c) = layer(inputs.x, hx, lengths=inputs.lengths)
        return out, h, c
    out, (h, c) = layer(inputs.packed, hx)
    return out.data, h, c


def varlen_operation(mode: str, provider: str, layer: nn.Module, inputs: VarlenInputs,
                     device: torch.device) -> Callable[[], None]:
    """A no-argument callable that runs ``mode`` once and synchronises (what the clock times).
    forward+backward backpropagates the output, h_n and c_n gradients together.

    Raises ValueError naming ``mode`` when it is not forward or forward_backward."""
    if mode not in VARLEN_MODES:
        raise ValueError(f"mode must be one of {', '.join(VARLEN_MODES)}, got {mode!r}")
    params = list(layer.parameters())
    dy = inputs.dy if provider in PADDED else inputs.dy_data

    def forward():
        with torch.no_grad():
            run_provider(provider, layer, inputs)
        synchronize(device)

    def forward_backward():
        for t in params + inputs.leaves():
            t.grad = None
        out, h, c = run_provider(provider, layer, inputs)
        torch.autograd.backward([out, h, c], [dy, inputs.dh, inputs.dc])
        synchronize(device)

    return forward if mode == "forward" else forward_backward


@lru_cache(maxsize=2)
def varlen_reference(T: int, B: int, I: int, H: int, weights_seed: int, device_type: str = "cpu"):
    """float64 nn.LSTM on the PackedSequence (on ``device_type``; CPU if that device refuses
    float64): ``({"output", "h_n", "c_n"}, {gradient name: tensor})``, all on the CPU."""
    try:
        return _reference_on(T, B, I, H, weights_seed, torch.device(device_type))
    except RuntimeError:
        if device_type == "cpu":
            raise
        return _reference_on(T, B, I, H, weights_seed, torch.device("cpu"))


def _reference_on(T, B, I, H, weights_seed, device):
    weights = {k: v.double() for k, v in reference_weights(I, H, weights_seed).items()}
    ref = build_varlen_layer("nn", weights, device, torch.float64)
    inputs = make_varlen_inputs(T, B, I, H, device, torch.float64)
    out, h, c = run_provider("nn", ref, inputs)
    torch.autograd.backward([out, h, c], [inputs.dy_data, inputs.dh, inputs.dc])
    cpu = lambda t: t.detach().cpu()
    values = {"output": cpu(out), "h_n": cpu(h), "c_n": cpu(c)}
    grads = {"d_input": cpu(inputs.packed.data.grad), "d_h0": cpu(inputs.h0.grad), "d_c0": cpu(inputs.c0.grad)}
    grads.update({f"d_{k}": cpu(p.grad) for k, p in ref.named_parameters()})
    return values, grads


def check_varlen(provider: str, layer: nn.Module, mode: str, T: int, B: int, I: int, H: int, device, dtype,
                 weights_seed: int) -> dict[str, float]:
    """Relative errors vs float64 nn.LSTM on the packed input (NaN/inf give inf): output data, h_n,
    c_n and, for forward_backward, every gradient. ``nn-padded`` ignores the lengths, so only its
    output at real steps is comparable (h_n, c_n and gradients are not: not checked)."""
    expected, expected_grads = varlen_reference(T, B, I, H, weights_seed, torch.device(device).type)
    inputs = make_varlen_inputs(T, B, I, H, device, dtype)
    out, h, c = run_provider(provider, layer, inputs)
    data = inputs.pack_like(out) if provider in PADDED else out
    errors = {"output": rel_err(data, expected["output"])}
    if provider == "nn-padded":
        return errors
    errors.update(h_n=rel_err(h, expected["h_n"]), c_n=rel_err(c, expected["c_n"]))
    if mode == "forward":
        return errors
    dy = inputs.dy if provider in PADDED else inputs.dy_data
    torch.autograd.backward([out, h, c], [dy, inputs.dh, inputs.dc])
    d_input = inputs.pack_like(inputs.x.grad) if provider in PADDED else inputs.packed.data.grad
    actual = {"d_input": d_input, "d_h0": inputs.h0.grad, "d_c0": inputs.c0.grad}
    actual.update({f"d_{k}": p.grad for k, p in layer.named_parameters()})
    for name, grad in actual.items():
        errors[name] = rel_err(grad, expected_grads[name]) if grad is not None else float("inf")
    layer.zero_grad(set_to_none=True)
    return errors


def length_config(inputs: VarlenInputs, T: int) -> dict:
    """The batch's length distribution and token counts, for the report's config column."""
    return {"lengths": f"uniform integers in [{-(-T // 4)}, {T}]", "lengths_seed": LENGTHS_SEED,
            "real_tokens": inputs.real_tokens,
            "padded_tokens": int(inputs.x.shape[0]) * int(inputs.x.shape[1]), "T_max": int(inputs.x.shape[0])}
