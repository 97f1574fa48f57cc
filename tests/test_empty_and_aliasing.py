"""Empty tensors and the storage of results behave as nn.LSTM's (issue 9, items 1 and 5).

Every fusion level, module and functional form; backend='triton' (kernels under the interpreter).
"""

import pytest
import torch
from torch import nn

import lstm_triton

from .helpers import DEVICE

LEVELS = ["cell", "step", "persistent"]


def _pair(fusion, I=3, H=5, **kwargs):
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, **kwargs)
    ours = lstm_triton.LSTM(I, H, fusion=fusion, backend="triton", **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours.to(DEVICE)


def _run(layer, x, hx=None):
    y, (h, c) = layer(x, hx)
    (y.sum() + h.sum() + c.sum()).backward()
    return y, h, c


@pytest.mark.parametrize("fusion", LEVELS)
@pytest.mark.parametrize("variant", [dict(), dict(batch_first=True), dict(num_layers=2, bidirectional=True)],
                         ids=["plain", "batch_first", "2-layer-bidirectional"])
def test_an_empty_batch_gives_nn_lstm_shapes_and_zero_gradients(fusion, variant):
    ref, ours = _pair(fusion, **variant)
    shape = (0, 3, 3) if variant.get("batch_first") else (3, 0, 3)
    states = (2 * variant.get("num_layers", 1) if variant.get("bidirectional") else 1, 0, 5)
    results = {}
    for name, layer in (("ref", ref), ("ours", ours)):
        x = torch.randn(shape, device=next(layer.parameters()).device, requires_grad=True)
        h0 = torch.zeros(states, device=x.device, requires_grad=True)
        c0 = torch.zeros(states, device=x.device, requires_grad=True)
        results[name] = [t.shape for t in _run(layer, x, (h0, c0))] + [x.grad.shape, h0.grad.shape]
        grads = [p.grad for p in layer.parameters()]
        assert all(g is not None and g.shape == p.shape and not g.any() for g, p in zip(grads, layer.parameters()))
    assert results["ours"] == results["ref"]


@pytest.mark.parametrize("fusion", LEVELS)
def test_functional_lstm_with_an_empty_batch(fusion):
    w_ih = torch.randn(20, 3, device=DEVICE, requires_grad=True)
    w_hh = torch.randn(20, 5, device=DEVICE, requires_grad=True)
    b = torch.randn(20, device=DEVICE, requires_grad=True)
    x = torch.randn(4, 0, 3, device=DEVICE, requires_grad=True)
    y, (h, c) = lstm_triton.lstm(x, w_ih, w_hh, b, None, fusion=fusion, backend="triton")
    assert (y.shape, h.shape, c.shape) == ((4, 0, 5), (0, 5), (0, 5))
    (y.sum() + h.sum() + c.sum()).backward()
    for g, p in ((w_ih.grad, w_ih), (w_hh.grad, w_hh), (b.grad, b), (x.grad, x)):
        assert g.shape == p.shape and not g.any()


@pytest.mark.parametrize("shape", [(0, 2, 3), (0, 3)], ids=["batched", "unbatched"])
def test_an_empty_sequence_raises_what_nn_lstm_raises(shape):
    with pytest.raises(RuntimeError) as expected:
        nn.LSTM(3, 5)(torch.randn(shape))
    for fusion in LEVELS:
        with pytest.raises(RuntimeError) as actual:
            lstm_triton.LSTM(3, 5, fusion=fusion, backend="triton", device=DEVICE)(torch.randn(shape, device=DEVICE))
        assert str(actual.value) == str(expected.value)
    with pytest.raises(RuntimeError, match=str(expected.value)):
        lstm_triton.lstm(torch.randn(0, 2, 3), torch.randn(20, 3), torch.randn(20, 5), backend="triton")


@pytest.mark.parametrize("I,H,field", [(0, 5, "input_size"), (3, 0, "hidden_size")])
def test_zero_features_are_refused_as_by_nn_lstm(I, H, field):
    """nn.LSTM's constructor refuses I = 0 and H = 0; the functional form does the same."""
    with pytest.raises(ValueError) as expected:
        nn.LSTM(I, H)
    assert field in str(expected.value)
    with pytest.raises(ValueError, match=str(expected.value)):
        lstm_triton.lstm(torch.randn(4, 2, I), torch.randn(4 * H, I), torch.randn(4 * H, H), backend="triton")


# ----------------------------------------------------------------------------- aliasing

INPLACE = {
    "detach_": lambda t: t.detach_(),
    "mul_": lambda t: t.mul_(0.5),
    "resize_": lambda t: t.resize_(t.numel() + 7),
}


def _storage(t):
    return t.untyped_storage().nbytes(), t.numel() * t.element_size(), t._is_view(), t.storage_offset()


def _outcome(fn, t):
    try:
        fn(t)
        return "ok"
    except RuntimeError as e:  # e.g. "Can't detach views in-place", "cannot resize variables that require grad"
        return str(e).split(".")[0]


@pytest.mark.parametrize("fusion", LEVELS)
@pytest.mark.parametrize("variant", [dict(), dict(batch_first=True), dict(unbatched=True), dict(num_layers=2)],
                         ids=["plain", "batch_first", "unbatched", "2-layer"])
def test_results_behave_like_nn_lstm_results_in_place(fusion, variant):
    """Each of y, h_n, c_n: same view-ness as nn.LSTM's, and detach_/mul_/resize_ succeed or fail as
    on nn.LSTM's. Time-major results are exactly their own storage (no hidden (T+1,B,H) buffer)."""
    unbatched = variant.pop("unbatched", False)
    ref, ours = _pair(fusion, **variant)
    x = torch.randn((4, 3) if unbatched else (4, 2, 3))
    for op, fn in INPLACE.items():
        ref_out, ours_out = ref(x), ours(x.to(DEVICE))
        for name, a, b in zip(("y", "h_n", "c_n"), (ref_out[0], *ref_out[1]), (ours_out[0], *ours_out[1])):
            assert b._is_view() == a._is_view(), name
            if not variant and not unbatched:
                assert _storage(b) == _storage(a), name
            assert _outcome(fn, b) == _outcome(fn, a), (name, op)


@pytest.mark.parametrize("fusion", LEVELS)
def test_functional_results_own_their_storage(fusion):
    args = [torch.randn(s, device=DEVICE) for s in ((4, 2, 3), (20, 3), (20, 5), (20,), (20,))]
    y, (h, c) = lstm_triton.lstm(*args, fusion=fusion, backend="triton")
    for name, t in (("y", y), ("h_n", h), ("c_n", c)):
        assert not t._is_view(), name
        assert t.untyped_storage().nbytes() == t.numel() * 4 and t.storage_offset() == 0, name
        t.detach_()  # the case: c_n was a view of the saved (T+1,B,H) buffer
        t.mul_(2.0)
        t.resize_(t.numel() + 1)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_TANH"])
def test_an_in_place_edit_of_the_output_is_an_error_at_backward_never_a_wrong_gradient(cell):
    """The recurrence saves its output y for backward (the h_{t−1} of dW_hh), as cuDNN's nn layers
    do on CUDA: editing y in place (relu_, ReLU(inplace=True)) then fails at backward with autograd's
    "modified by an inplace operation". h_n owns its storage: editing it in place is fine, and the
    gradients are nn's."""
    from .helpers import CELLS

    ref_class, name, extra = CELLS[cell]
    torch.manual_seed(0)
    ref = ref_class(3, 5, **extra)
    ours = getattr(lstm_triton, name)(3, 5, fusion="step", backend="triton", **extra).to(DEVICE)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 2, 3)
    y, _ = ours(x.to(DEVICE))
    y.relu_()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    grads = []
    for layer in (ours, ref):
        layer.zero_grad()
        xg = x.to(DEVICE if layer is ours else "cpu", copy=True).requires_grad_()
        _, state = layer(xg)
        h_n = state[0] if cell == "LSTM" else state
        h_n.relu_()
        h_n.sum().backward()
        grads.append([xg.grad.cpu()] + [p.grad.cpu() for p in layer.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
