"""Variable lengths for GRU and the plain RNN (where noted, every cell) on the kernels (``packed.py``):
PackedSequence and padded input with ``lengths`` against nn in float64 — output, h_n and every
gradient — with torch's own recurrent kernels switched off during our call, so a silent fallback
to them fails; and padded steps that would overflow if they ran freely.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_triton

from .helpers import CELLS as ALL_CELLS
from .helpers import DEVICE, assert_close, rel_err

pytestmark = pytest.mark.usefixtures("poisoned")  # every kernel output starts as NaN

CELLS = {"GRU": (nn.GRU, "GRU", {}), "RNN_TANH": (nn.RNN, "RNN", {"nonlinearity": "tanh"}),
         "RNN_RELU": (nn.RNN, "RNN", {"nonlinearity": "relu"})}


@pytest.fixture
def no_torch_recurrence(monkeypatch):
    """Make torch's recurrent kernels raise for the duration of a block: ``with no_torch_recurrence():``."""
    import contextlib

    @contextlib.contextmanager
    def off():
        with monkeypatch.context() as m:
            for name in ("gru", "rnn_tanh", "rnn_relu", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell"):
                m.setattr(torch._VF, name, _refuse(name))
            yield

    return off


def _refuse(name):
    def fn(*args, **kwargs):
        raise AssertionError(f"torch._VF.{name} ran: the layer fell back to torch's kernel")
    return fn


def _pair(cell, seed=0, scale=0.5, **kwargs):
    ref_class, name, extra = CELLS[cell]
    gen = torch.Generator().manual_seed(seed)
    ref = ref_class(4, 10, dtype=torch.float64, **extra, **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale)
    ours = getattr(lstm_triton, name)(4, 10, backend="triton", device=DEVICE, **extra, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _errors(ref, ours, x64, x32, out64, out32, h64, h32):
    """Backward with the same random upstream gradients; relative errors of everything."""
    gen = torch.Generator().manual_seed(1)
    up_y = torch.randn(out64.shape, generator=gen, dtype=torch.float64)
    up_h = torch.randn(h64.shape, generator=gen, dtype=torch.float64)
    ((out64 * up_y).sum() + (h64 * up_h).sum()).backward()
    ((out32 * up_y.float().to(out32.device)).sum() + (h32 * up_h.float().to(h32.device)).sum()).backward()
    errors = {"output": rel_err(out32, out64), "h_n": rel_err(h32, h64), "d_input": rel_err(x32.grad, x64.grad)}
    errors.update({f"d_{n}": rel_err(p.grad, q.grad) for (n, p), q in zip(ours.named_parameters(), ref.parameters())})
    return errors


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("fusion", ["cell", "step", "persistent"])
def test_packed_two_layers_bidirectional_on_the_kernels(cell, fusion, no_torch_recurrence):
    ref, ours = _pair(cell, num_layers=2, bidirectional=True)
    ours.fusion = fusion
    x = torch.randn(7, 5, 4, dtype=torch.float64)
    lengths = torch.tensor([3, 7, 1, 5, 2])  # unsorted, a full row and a length-1 row
    x64, x32 = x.clone().requires_grad_(), x.float().to(DEVICE).requires_grad_()
    out64, h64 = ref(pack_padded_sequence(x64, lengths, enforce_sorted=False))
    with no_torch_recurrence():
        out32, h32 = ours(pack_padded_sequence(x32, lengths, enforce_sorted=False))
        y32 = pad_packed_sequence(out32)[0]
        errors = _errors(ref, ours, x64, x32, pad_packed_sequence(out64)[0], y32, h64, h32)
    assert torch.equal(out32.batch_sizes, out64.batch_sizes)
    assert_close(errors)


@pytest.mark.parametrize("cell", CELLS)
def test_lengths_with_an_empty_row_and_initial_state_gradients(cell, no_torch_recurrence):
    """Module ``forward(x, hx, lengths=...)`` with a length-0 row (h_n = h0 there, its gradient
    straight to h0) against nn on the packed rows of positive length."""
    ref, ours = _pair(cell, seed=2)
    lengths = torch.tensor([4, 0, 6, 2])
    x = torch.randn(6, 4, 4, dtype=torch.float64)
    h0 = torch.randn(1, 4, 10, dtype=torch.float64)
    x64, x32 = x.clone().requires_grad_(), x.float().to(DEVICE).requires_grad_()
    h0_64, h0_32 = h0.clone().requires_grad_(), h0.float().to(DEVICE).requires_grad_()
    with no_torch_recurrence():
        y32, h32 = ours(x32, h0_32, lengths=lengths)
    keep = lengths > 0  # nn cannot pack a length-0 row: the reference runs the others, row 1 is h0
    out64, hk = ref(pack_padded_sequence(x64[:, keep], lengths[keep], enforce_sorted=False), h0_64[:, keep])
    y64 = x64.new_zeros(6, 4, 10)
    y64[:, keep] = pad_packed_sequence(out64, total_length=6)[0]
    h64 = h0_64.clone()
    h64[:, keep] = hk
    with no_torch_recurrence():
        errors = _errors(ref, ours, x64, x32, y64, y32, h64, h32)
    errors["d_h0"] = rel_err(h0_32.grad, h0_64.grad)
    assert_close(errors)
    assert not y32[:, 1].any() and torch.equal(h32[0, 1].cpu(), h0_32[0, 1].detach().cpu())


@pytest.mark.parametrize("fusion", ["cell", "step", "persistent"])
def test_relu_padding_that_would_overflow_stays_out_of_every_gradient(fusion, no_torch_recurrence):
    """ReLU with W_hh = 20·I and b_hh = 1: run freely on zero padding, a short row's state grows
    20× per padded step and passes fp32's range within 30 steps, and 0·inf turns dW_hh into NaN.
    With the padded pre-activations at −inf the rows' gradients equal nn's on the packed input,
    which never computes those steps. (The long row's input keeps its own state at 0.)"""
    ref, ours = _pair("RNN_RELU", seed=3)
    with torch.no_grad():
        for layer in (ref, ours):
            layer.weight_ih_l0.fill_(1.0)
            layer.bias_ih_l0.zero_()
            layer.weight_hh_l0.copy_(20 * torch.eye(10))
            layer.bias_hh_l0.fill_(1.0)
    ours.fusion = fusion
    T, lengths = 42, torch.tensor([1, 42, 3])
    x = torch.full((T, 3, 4), 0.1, dtype=torch.float64)
    x[:, 1] = -10.0  # pre-activation 20·0 − 40 + 1 < 0: the long row stays at h = 0
    x[lengths[None, :] <= torch.arange(T)[:, None]] = 0.0  # padding as pad_packed_sequence writes it
    x64, x32 = x.clone().requires_grad_(), x.float().to(DEVICE).requires_grad_()
    out64, h64 = ref(pack_padded_sequence(x64, lengths, enforce_sorted=False))
    with no_torch_recurrence():
        y32, h32 = ours(x32, lengths=lengths)
    y64 = pad_packed_sequence(out64, total_length=T)[0]
    errors = _errors(ref, ours, x64, x32, y64, y32, h64, h32)
    assert_close(errors)


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_packed_input_to_a_batch_first_layer(cell, no_torch_recurrence):
    """nn ignores batch_first for a PackedSequence (it has no batch dimension of its own): so must we.
    All four cells, hx given, against nn in float64."""
    ref_class, name, extra = ALL_CELLS[cell]
    ref = ref_class(4, 10, batch_first=True, dtype=torch.float64, **extra)
    ours = getattr(lstm_triton, name)(4, 10, batch_first=True, backend="triton", device=DEVICE, **extra)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, 4, dtype=torch.float64)  # (B, T, I)
    lengths = torch.tensor([2, 5, 3])
    hx = tuple(torch.randn(1, 3, 10, dtype=torch.float64) for _ in range(2 if cell == "LSTM" else 1))
    out64, s64 = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False),
                     hx if cell == "LSTM" else hx[0])
    with no_torch_recurrence(), torch.no_grad():
        hx32 = tuple(h.float().to(DEVICE) for h in hx)
        out32, s32 = ours(pack_padded_sequence(x.float().to(DEVICE), lengths, batch_first=True, enforce_sorted=False),
                          hx32 if cell == "LSTM" else hx32[0])
    assert torch.equal(out32.batch_sizes, out64.batch_sizes)
    errors = {"output": rel_err(out32.data, out64.data)}
    s32, s64 = (s32, s64) if cell == "LSTM" else ((s32,), (s64,))
    errors.update({f"state{i}": rel_err(a, b) for i, (a, b) in enumerate(zip(s32, s64))})
    assert_close(errors)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("lengths", [[], torch.zeros(0, dtype=torch.int64)], ids=["list", "tensor"])
@pytest.mark.parametrize("cell", ALL_CELLS)
def test_an_empty_batch_with_empty_lengths_gives_nn_empty_results(cell, lengths, backend):
    ref_class, name, extra = ALL_CELLS[cell]
    ref = ref_class(3, 5, **extra)
    ours = getattr(lstm_triton, name)(3, 5, backend=backend, device=DEVICE, **extra)
    x = torch.randn(4, 0, 3)
    y_ref, s_ref = ref(x)
    y, s = ours(x.to(DEVICE), lengths=lengths)
    assert y.shape == y_ref.shape
    for a, b in zip(s if cell == "LSTM" else (s,), s_ref if cell == "LSTM" else (s_ref,)):
        assert a.shape == b.shape


@pytest.mark.parametrize("lengths", [[1, None], ["a", "b"], [[1], [2]], [1.5, 2.0]],
                         ids=["none", "strings", "2-D", "floats"])
def test_lengths_that_are_not_integers_raise_one_value_error(lengths):
    with pytest.raises(ValueError, match="^lengths must ") as info:
        lstm_triton.GRU(2, 5, backend="triton")(torch.randn(3, 2, 2, device=DEVICE), lengths=lengths)
    assert "\n" not in str(info.value)


def test_an_input_that_is_not_a_tensor_is_nn_s_attribute_error_with_a_clear_message():
    np = pytest.importorskip("numpy")
    with pytest.raises(AttributeError, match="input must be a torch.Tensor or a PackedSequence, got ndarray"):
        lstm_triton.LSTM(2, 5)(np.zeros((3, 2, 2), dtype=np.float32))
