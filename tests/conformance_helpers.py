"""Helpers for tests/test_nn_conformance.py: build lstm_triton.LSTM and nn.LSTM on the same
weights, run both on the same inputs and upstream gradients, compare what a user can observe.

Conventions: ``ours`` is ``lstm_triton.LSTM(..., backend='triton')`` in fp32 (the Triton kernels,
interpreted on CPU tensors); ``ref`` is ``nn.LSTM`` with the same weights, in float64 unless a
test says otherwise. Values are compared with the relative error ‖a − b‖/‖b‖ ≤ 1e-5 (fp32 dots are
exact under the interpreter); a NaN where the reference has none never passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
from torch import nn

import lstm_triton

from .helpers import DEVICE, rel_err

LEVELS = ("cell", "step", "persistent")
TOL = 1e-5


def make_pair(input_size: int, hidden_size: int, *, fusion: str = "cell", ref_dtype=torch.float64,
              seed: int = 0, **kwargs) -> tuple[lstm_triton.LSTM, nn.LSTM]:
    """``(ours fp32, ref nn.LSTM in ref_dtype)``, both on DEVICE, with identical weights.

    Weights are nn.LSTM's default init from ``seed``, so both constructors draw the same numbers.
    """
    torch.manual_seed(seed)
    ours = lstm_triton.LSTM(input_size, hidden_size, fusion=fusion, backend="triton", device=DEVICE, **kwargs)
    ref = nn.LSTM(input_size, hidden_size, device=DEVICE, **kwargs).to(ref_dtype)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def randn(*shape: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """A fresh standard-normal tensor on DEVICE from its own generator (no global RNG side effects)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(DEVICE)


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, tol: float = TOL) -> None:
    """Same shape, and relative error ≤ tol (NaN/inf in ``actual`` fails)."""
    err = rel_err(actual, expected)
    assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.0e}"


def assert_same_nonfinite(name: str, actual: torch.Tensor, expected: torch.Tensor, tol: float = TOL) -> None:
    """NaN in the same places, ±inf in the same places with the same sign, finite rest close."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    assert torch.equal(nan_a, nan_e), (
        f"{name}: NaN at {nan_a.nonzero().tolist()}, nn.LSTM has NaN at {nan_e.nonzero().tolist()}")
    inf_a, inf_e = torch.isinf(a), torch.isinf(e)
    assert torch.equal(inf_a, inf_e) and torch.equal(a[inf_a], e[inf_e]), f"{name}: inf pattern differs"
    finite = torch.isfinite(e)
    if finite.any():
        assert_close(name, a[finite], e[finite], tol)


def loss_of(out, seed: int = 99, which: Sequence[int] = (0, 1, 2)) -> torch.Tensor:
    """A scalar with random upstream gradients for output, h_n and c_n (the ones in ``which``,
    by index), the same numbers for both modules."""
    y, (h, c) = out
    gen = torch.Generator().manual_seed(seed)
    total = 0
    for i, t in enumerate((y, h, c)):
        upstream = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t)
        if i in which:
            total = total + (t * upstream).sum()
    return total


def compare_forward_backward(ours: nn.Module, ref: nn.Module, leaves: Sequence[torch.Tensor],
                             build: Callable = None, *, tol: float = TOL, backward: bool = True,
                             ref_dtype=torch.float64, which: Sequence[int] = (0, 1, 2)) -> None:
    """Run ``ours(*build(leaves))`` and ``ref(*build(leaves in ref_dtype))``; compare output, h_n,
    c_n and (``backward``) the gradient of every leaf that requires grad and of every parameter,
    for a loss on the outputs in ``which`` (0 output, 1 h_n, 2 c_n).

    ``leaves`` are ours' leaf tensors (fp32, any strides); ``build`` turns them into the call's
    arguments ``(input, hx)`` (default: ``(leaves[0], tuple(leaves[1:]) or None)``), so a test can
    pass views — transposes, strided slices, expands — and still compare leaf gradients.
    """
    build = build or (lambda ls: (ls[0], tuple(ls[1:]) or None))
    ref_leaves = [t.detach().to(ref_dtype).requires_grad_(t.requires_grad) for t in leaves]
    out, ref_out = ours(*build(leaves)), ref(*build(ref_leaves))
    for name, a, e in zip(("output", "h_n", "c_n"), (out[0], *out[1]), (ref_out[0], *ref_out[1])):
        assert a.dtype == leaves[0].dtype, f"{name}: dtype {a.dtype}, input was {leaves[0].dtype}"
        assert_close(name, a, e, tol)
    if not backward:
        return
    loss_of(out, which=which).backward()
    loss_of(ref_out, which=which).backward()
    for i, (a, e) in enumerate(zip(leaves, ref_leaves)):
        if e.requires_grad:
            assert a.grad is not None, f"grad of leaf {i} is None"
            assert_close(f"grad of leaf {i}", a.grad, e.grad, tol)
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        e = ref_params[name]
        if e.grad is None:
            assert p.grad is None, f"{name}.grad is set; nn.LSTM leaves it None"
        else:
            assert p.grad is not None, f"{name}.grad is None"
            assert_close(f"{name}.grad", p.grad, e.grad, tol)


def raised(fn: Callable) -> BaseException:
    """The exception ``fn()`` raises (fails the test if it raises none)."""
    with pytest.raises(Exception) as info:
        fn()
    return info.value
