"""Timed operations for one layer of any cell, the float64 reference of the same cell they are
checked against, and device-aware helpers (synchronisation, kernel latency, peak memory)."""

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
    c0: torch.Tensor | None  # the LSTM's cell state (1, B, H); None for GRU and RNN
    dy: torch.Tensor  # upstream gradient of the output, (T, B, H)

    @property
    def hx(self):
        """The initial state in torch.nn's form: ``(h0, c0)`` for the LSTM, ``h0`` otherwise."""
        return self.h0 if self.c0 is None else (self.h0, self.c0)

    @property
    def leaves(self) -> dict[str, torch.Tensor]:
        """The input-side gradient leaves by their reference names (d_input, d_h0, d_c0)."""
        named = {"d_input": self.x, "d_h0": self.h0, "d_c0": self.c0}
        return {k: v for k, v in named.items() if v is not None}


def make_inputs(T: int, B: int, I: int, H: int, device, dtype, seed: int = 0, cell: str = "lstm",
                scale: float = 1.0) -> LayerInputs:
    """Seeded inputs; the LSTM's draws (x, h0, c0, dy) are the same whatever other cells exist.
    ``scale`` multiplies x (the robustness check's large-magnitude inputs: x ×100)."""
    gen = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randn(shape, generator=gen, dtype=torch.float64)
    x, h0 = draw(T, B, I) * scale, draw(1, B, H)
    c0 = draw(1, B, H) if cell == "lstm" else None
    dy = draw(T, B, H)
    move = lambda t, grad: t.to(device=device, dtype=dtype).requires_grad_(grad)
    return LayerInputs(move(x, True), move(h0, True), None if c0 is None else move(c0, True), move(dy, False))


def operation(mode: str, layer: nn.Module, inputs: LayerInputs, device: torch.device) -> Callable[[], None]:
    """A no-argument callable that runs ``mode`` once and synchronises (what the clock times)."""
    params = list(layer.parameters())
    leaves = list(inputs.leaves.values())
    optimizer = torch.optim.SGD(params, lr=1e-3) if mode == "train_step" else None

    def forward():
        with torch.no_grad():
            layer(inputs.x, inputs.hx)
        synchronize(device)

    def forward_backward():
        for t in params + leaves:
            t.grad = None
        out, _ = layer(inputs.x, inputs.hx)
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


def final_states(state) -> dict[str, torch.Tensor]:
    """torch.nn's returned state by name: h_n (and the LSTM's c_n), each (1, B, H)."""
    if isinstance(state, tuple):
        return {"h_n": state[0], "c_n": state[1]}
    return {"h_n": state}


@lru_cache(maxsize=4)
def reference(T: int, B: int, I: int, H: int, weights_key: int, seed: int = 0, cell: str = "lstm",
              scale: float = 1.0):
    """torch.nn's layer of ``cell`` in float64 on CPU, for the benchmark's inputs (x times
    ``scale``): ``(output, grads)`` where ``grads`` also holds the final state (h_n, c_n) under
    those names beside every gradient."""
    from bench.providers import build_layer, reference_weights

    weights = {k: v.double() for k, v in reference_weights(I, H, weights_key, cell).items()}
    ref = build_layer("nn", weights, "cpu", torch.float64, cell)
    inputs = make_inputs(T, B, I, H, "cpu", torch.float64, seed, cell, scale)
    out, state = ref(inputs.x, inputs.hx)
    out.backward(inputs.dy)
    grads = {k: v.detach() for k, v in final_states(state).items()}
    grads.update({name: leaf.grad for name, leaf in inputs.leaves.items()})
    grads.update({f"d_{k}": p.grad for k, p in ref.named_parameters()})
    return out.detach(), grads


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    a, b = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.isfinite(a).all():
        return float("inf")
    return float((a - b).norm() / b.norm())


def check_against_reference(layer, mode, T, B, I, H, device, dtype, weights_key,
                            cell: str = "lstm", scale: float = 1.0) -> dict[str, float]:
    """Relative errors of the output and the final state (h_n, c_n) — and, for backward modes,
    every gradient — vs float64 torch.nn of the same ``cell``, on inputs with x times ``scale``."""
    ref_out, ref_grads = reference(T, B, I, H, weights_key, cell=cell, scale=scale)
    ref_states = {k: v for k, v in ref_grads.items() if not k.startswith("d_")}
    ref_grads = {k: v for k, v in ref_grads.items() if k.startswith("d_")}
    inputs = make_inputs(T, B, I, H, device, dtype, cell=cell, scale=scale)
    out, state = layer(inputs.x, inputs.hx)
    errors = {"output": rel_err(out, ref_out)}
    states = final_states(state)
    if set(states) != set(ref_states):
        raise AssertionError(f"final state {sorted(states)} does not match the reference's {sorted(ref_states)}")
    errors.update({name: rel_err(value, ref_states[name]) for name, value in states.items()})
    if mode != "forward":
        out.backward(inputs.dy)
        actual = {name: leaf.grad for name, leaf in inputs.leaves.items()}
        actual.update(nn_layout_grads(layer))
        if set(actual) != set(ref_grads):
            raise AssertionError(f"gradients {sorted(actual)} do not match the reference's {sorted(ref_grads)}")
        for name, grad in actual.items():
            errors[name] = rel_err(grad, ref_grads[name])
        layer.zero_grad(set_to_none=True)
    return errors


def nn_layout_grads(layer: nn.Module) -> dict[str, torch.Tensor]:
    """Weight gradients under torch.nn's names, also for the naive layers' separate matrices.

    A naive layer has one bias where torch.nn adds two (``bias_ih + bias_hh``): both get its
    gradient — except the GRU's n block, whose recurrent bias ``b_hn`` sits inside the reset
    product and is a parameter of its own (bench/providers.py's weights carry a nonzero one)."""
    from lstm_triton.charlm.naive import NN_ORDER, NaiveLSTM
    from lstm_triton.charlm.naive_cells import GRU_NN_ORDER, NaiveGRU, NaiveRNN

    grad = lambda name: getattr(layer, name).grad
    if isinstance(layer, NaiveLSTM):
        order, hidden_bias = NN_ORDER, None
    elif isinstance(layer, NaiveGRU):
        order = GRU_NN_ORDER
        hidden_bias = torch.zeros_like(grad("b_h")) if layer.b_hn is None else grad("b_hn")
    elif isinstance(layer, NaiveRNN):
        order, hidden_bias = ("h",), None
    else:
        return {f"d_{k}": p.grad for k, p in layer.named_parameters()}
    bias = torch.cat([grad(f"b_{g}") for g in order])
    bias_hh = bias if hidden_bias is None else torch.cat([bias[: -hidden_bias.numel()], hidden_bias])
    return {
        "d_weight_ih_l0": torch.cat([grad(f"W_x{g}").T for g in order]),
        "d_weight_hh_l0": torch.cat([grad(f"W_h{g}").T for g in order]),
        "d_bias_ih_l0": bias, "d_bias_hh_l0": bias_hh,
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
