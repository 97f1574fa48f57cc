"""Timed operations for one layer, the float64 reference they are checked against, and
device-aware helpers (synchronisation, kernel latency, peak memory)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from lstm_triton.charlm.train import clip_gradients


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class LayerInputs:
    x: torch.Tensor  # (T, B, I), requires grad
    h0: torch.Tensor  # (1, B, H), requires grad
    c0: torch.Tensor
    dy: torch.Tensor  # upstream gradient of the output, (T, B, H)


def make_inputs(T: int, B: int, I: int, H: int, device, dtype, seed: int = 0) -> LayerInputs:
    gen = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randn(shape, generator=gen, dtype=torch.float64)
    x, h0, c0, dy = draw(T, B, I), draw(1, B, H), draw(1, B, H), draw(T, B, H)
    move = lambda t, grad: t.to(device=device, dtype=dtype).requires_grad_(grad)
    return LayerInputs(move(x, True), move(h0, True), move(c0, True), move(dy, False))


def operation(mode: str, layer: nn.Module, inputs: LayerInputs, device: torch.device) -> Callable[[], None]:
    """A no-argument callable that runs ``mode`` once and synchronises (what the clock times)."""
    params = list(layer.parameters())
    leaves = [inputs.x, inputs.h0, inputs.c0]
    optimizer = torch.optim.SGD(params, lr=1e-3) if mode == "train_step" else None

    def forward():
        with torch.no_grad():
            layer(inputs.x, (inputs.h0, inputs.c0))
        synchronize(device)

    def forward_backward():
        for t in params + leaves:
            t.grad = None
        out, _ = layer(inputs.x, (inputs.h0, inputs.c0))
        out.backward(inputs.dy)
        if optimizer is not None:
            clip_gradients(layer, 1.0)
            optimizer.step()
        synchronize(device)

    if mode == "forward":
        return forward
    if mode in ("forward_backward", "train_step"):
        return forward_backward
    raise ValueError(f"mode must be forward, forward_backward or train_step, got {mode!r}")


@lru_cache(maxsize=4)
def reference(T: int, B: int, I: int, H: int, weights_key: int, seed: int = 0):
    """nn.LSTM in float64 on CPU: output and every gradient, for the benchmark's inputs."""
    from bench.providers import reference_weights

    ref = nn.LSTM(I, H, dtype=torch.float64)
    ref.load_state_dict({k: v.double() for k, v in reference_weights(I, H, weights_key).items()})
    inputs = make_inputs(T, B, I, H, "cpu", torch.float64, seed)
    out, _ = ref(inputs.x, (inputs.h0, inputs.c0))
    out.backward(inputs.dy)
    grads = {"d_input": inputs.x.grad, "d_h0": inputs.h0.grad, "d_c0": inputs.c0.grad}
    grads.update({f"d_{k}": p.grad for k, p in ref.named_parameters()})
    return out.detach(), grads


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    a, b = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.isfinite(a).all():
        return float("inf")
    return float((a - b).norm() / b.norm())


def check_against_reference(layer, mode, T, B, I, H, device, dtype, weights_key) -> dict[str, float]:
    """Relative errors of the output (and, for backward modes, every gradient) vs float64."""
    ref_out, ref_grads = reference(T, B, I, H, weights_key)
    inputs = make_inputs(T, B, I, H, device, dtype)
    out, _ = layer(inputs.x, (inputs.h0, inputs.c0))
    errors = {"output": rel_err(out, ref_out)}
    if mode != "forward":
        out.backward(inputs.dy)
        actual = {"d_input": inputs.x.grad, "d_h0": inputs.h0.grad, "d_c0": inputs.c0.grad}
        actual.update(nn_layout_grads(layer))
        for name, grad in actual.items():
            errors[name] = rel_err(grad, ref_grads[name])
        layer.zero_grad(set_to_none=True)
    return errors


def nn_layout_grads(layer: nn.Module) -> dict[str, torch.Tensor]:
    """Weight gradients under nn.LSTM's names, also for the naive layer's separate matrices."""
    from lstm_triton.charlm.naive import NN_ORDER, NaiveLSTM

    if not isinstance(layer, NaiveLSTM):
        return {f"d_{k}": p.grad for k, p in layer.named_parameters()}
    grad = lambda name: getattr(layer, name).grad
    bias = torch.cat([grad(f"b_{g}") for g in NN_ORDER])
    return {
        "d_weight_ih_l0": torch.cat([grad(f"W_x{g}").T for g in NN_ORDER]),
        "d_weight_hh_l0": torch.cat([grad(f"W_h{g}").T for g in NN_ORDER]),
        "d_bias_ih_l0": bias, "d_bias_hh_l0": bias,  # one bias in the seed: both get its gradient
    }


def tolerance(dtype: torch.dtype, device: torch.device) -> float:
    """DESIGN.md's bounds: fp32 exact dots 1e-5, tf32 (cuDNN's default on GPU) 1e-3, bf16 1e-2."""
    if dtype == torch.float32:
        return 1e-5 if device.type == "cpu" else 1e-3
    return 1e-2


def kernel_latency_ms(fn: Callable[[], None], device: torch.device) -> float | None:
    """triton.testing.do_bench median (ms) on CUDA; None elsewhere (it needs a GPU)."""
    if device.type != "cuda":
        return None
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def peak_memory_mb(fn: Callable[[], None], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    return torch.cuda.max_memory_allocated(device) / 2**20
