"""Gradients of gradients (issue 9, item 2): a create_graph backward through the layer is complete.

The kernels write plain buffers, so a backward that must itself be differentiable runs
``autograd.differentiable_backward`` (plain torch ops). Checked three ways: against nn.LSTM's own
double backward in float64, by finite differences of that function in float64 (gradgradcheck),
and that an ordinary backward still runs the kernels' backward operator.
"""

import pytest
import torch
from torch import nn

import lstm_triton
from lstm_triton.layers.autograd import differentiable_backward

from .helpers import DEVICE, rel_err

LEVELS = ["cell", "step", "persistent"]


def _gradient_penalty(layer, x, h0, c0, w):
    """L = Σ (dM/dx)² + Σ (dM/dh0)², M = Σ w·y + Σ c_n; backward of L into x, h0, c0 and the weights."""
    y, (_, c) = layer(x, (h0, c0))
    gx, gh = torch.autograd.grad((w * y).sum() + c.sum(), (x, h0), create_graph=True)
    ((gx * gx).sum() + (gh * gh).sum()).backward()
    return {"x": x.grad, "h0": h0.grad, "c0": c0.grad, **{n: p.grad for n, p in layer.named_parameters()}}


@pytest.mark.parametrize("fusion", LEVELS)
@pytest.mark.parametrize("variant", [dict(), dict(batch_first=True, num_layers=2)], ids=["1-layer", "2-layer"])
def test_gradient_penalty_matches_nn_lstm_in_float64(fusion, variant):
    T, B, I, H = 4, 2, 3, 5
    gen = torch.Generator().manual_seed(1)
    ref = nn.LSTM(I, H, dtype=torch.float64, **variant)
    ours = lstm_triton.LSTM(I, H, fusion=fusion, backend="triton", device=DEVICE, **variant)
    ours.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    L = variant.get("num_layers", 1)
    shape = (B, T, I) if variant.get("batch_first") else (T, B, I)
    inputs = [torch.randn(s, generator=gen, dtype=torch.float64) for s in (shape, (L, B, H), (L, B, H))]
    w = torch.randn((B, T, H) if variant.get("batch_first") else (T, B, H), generator=gen, dtype=torch.float64)
    expected = _gradient_penalty(ref, *(t.clone().requires_grad_() for t in inputs), w)
    actual = _gradient_penalty(ours, *(t.float().to(DEVICE).requires_grad_() for t in inputs), w.float().to(DEVICE))
    errors = {k: rel_err(actual[k], expected[k]) for k in expected}
    assert max(errors.values()) <= 1e-5, errors


def test_the_differentiable_backward_passes_gradcheck_and_gradgradcheck():
    """Its first and second derivatives agree with finite differences (float64, tiny shape)."""
    gen = torch.Generator().manual_seed(2)
    T, B, H = 3, 2, 2
    args = [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True)
            for s in ((T, B, 4 * H), (B, H), (B, H), (4 * H, H), (T, B, H), (B, H))]
    fn = lambda *a: differentiable_backward(*a)[:4]  # noqa: E731  (no projection: its dw_hr is None)
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)


def test_the_differentiable_backward_with_a_projection_passes_gradcheck():
    """nn.LSTM's proj_size: h_t = W_hr (o ⊙ tanh c_t), P=1 < H=2."""
    gen = torch.Generator().manual_seed(3)
    T, B, H, P = 3, 2, 2, 1
    args = [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True)
            for s in ((T, B, 4 * H), (B, P), (B, H), (4 * H, P), (T, B, P), (B, H), (P, H))]
    assert torch.autograd.gradcheck(differentiable_backward, args)
    assert torch.autograd.gradgradcheck(differentiable_backward, args)


def test_the_differentiable_backward_is_the_kernels_backward():
    """Same numbers as the operator's (kernel) backward on one case: the two paths are one formula."""
    gen = torch.Generator().manual_seed(3)
    T, B, I, H = 5, 3, 4, 6
    layer = lstm_triton.LSTM(I, H, fusion="step", backend="triton", device=DEVICE)
    x = torch.randn(T, B, I, generator=gen).to(DEVICE).requires_grad_()
    w = torch.randn(T, B, H, generator=gen).to(DEVICE)
    plain = torch.autograd.grad((layer(x)[0] * w).sum(), (x, layer.weight_hh_l0))
    graph = torch.autograd.grad((layer(x)[0] * w).sum(), (x, layer.weight_hh_l0), create_graph=True)
    assert graph[0].requires_grad and graph[1].requires_grad
    assert max(rel_err(a, b) for a, b in zip(graph, plain)) <= 1e-6


def test_an_ordinary_backward_runs_the_kernel_backward(monkeypatch):
    """Without create_graph the backward operator (the kernels) runs, not the torch recomputation."""
    import lstm_triton.layers.autograd as ag

    monkeypatch.setattr(ag, "differentiable_backward", lambda *a: pytest.fail("took the torch path"))
    layer = lstm_triton.LSTM(3, 5, fusion="cell", backend="triton", device=DEVICE)
    layer(torch.randn(4, 2, 3, device=DEVICE, requires_grad=True))[0].sum().backward()
    assert layer.weight_hh_l0.grad.abs().sum() > 0
