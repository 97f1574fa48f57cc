"""Non-finite values, as nn's layers treat them: a NaN in the input spreads exactly where it does in
nn (ReLU must not swallow it), and NaN or inf in the padding past each length reaches nothing — nn
never reads padding, so neither may the output, the states or any gradient.
"""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_triton

from .helpers import CELLS, DEVICE, assert_close, rel_err

pytestmark = pytest.mark.usefixtures("poisoned")  # every kernel output starts as NaN

LEVELS = ["cell", "step"]


def _pair(cell, I=3, H=6, seed=0):
    ref_class, name, extra = CELLS[cell]
    ref = ref_class(I, H, **extra)
    torch.manual_seed(seed)
    ours = getattr(lstm_triton, name)(I, H, backend="triton", device=DEVICE, **extra)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _states(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("fusion", LEVELS)
def test_a_nan_in_the_input_spreads_as_in_nn(cell, fusion):
    ref, ours = _pair(cell)
    ours.fusion = fusion
    x = torch.randn(5, 3, 3)
    x[1, 0, 2] = float("nan")
    x[3, 2, 0] = float("inf")  # inf · 0-weight products and saturations: whatever nn gives
    y_ref, s_ref = ref(x)
    y, s = ours(x.to(DEVICE))
    assert torch.equal(torch.isnan(y).cpu(), torch.isnan(y_ref)) and torch.isnan(y).any()
    for a, b in zip(_states(s), _states(s_ref)):
        assert torch.equal(torch.isnan(a).cpu(), torch.isnan(b))
    finite = torch.isfinite(y_ref)
    assert rel_err(y.cpu()[finite], y_ref[finite]) <= 1e-5


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("fusion", LEVELS)
def test_nan_and_inf_in_the_padding_reach_nothing(cell, fusion):
    """Padded input with ``lengths`` whose padding holds NaN and inf (as a ``torch.empty`` buffer
    may): output, states and every gradient equal nn's on the packed rows (fp32, ≤ 1e-5)."""
    ref, ours = _pair(cell, seed=1)
    ours.fusion = fusion
    lengths = torch.tensor([5, 2, 3])
    x = torch.randn(5, 3, 3)
    x[2:, 1] = float("nan")
    x[3:, 2] = float("inf")
    x_ref, x_ours = x.clone().requires_grad_(), x.to(DEVICE).requires_grad_()
    out_ref, s_ref = ref(pack_padded_sequence(x_ref, lengths, enforce_sorted=False))
    y_ref = pad_packed_sequence(out_ref, total_length=5)[0]
    y, s = ours(x_ours, lengths=lengths)
    up = torch.randn(y_ref.shape)
    ((y_ref * up).sum() + sum(t.sum() for t in _states(s_ref))).backward()
    ((y * up.to(y.device)).sum() + sum(t.sum() for t in _states(s))).backward()
    errors = {"output": rel_err(y, y_ref), "d_input": rel_err(x_ours.grad, x_ref.grad)}
    errors.update({f"state{i}": rel_err(a, b) for i, (a, b) in enumerate(zip(_states(s), _states(s_ref)))})
    errors.update({f"d_{n}": rel_err(p.grad, q.grad) for (n, p), q in zip(ours.named_parameters(), ref.parameters())})
    assert_close(errors)


def test_relu_keeps_nan_where_torch_relu_does():
    """The ReLU itself, one unit per row: relu(NaN) = NaN (as torch.relu), relu(−inf) = 0, relu(inf) = inf."""
    x = torch.tensor([float("nan"), float("-inf"), float("inf")]).view(1, 3, 1)
    expected = torch.relu(x)
    for fusion in LEVELS:
        y, _ = lstm_triton.rnn(x.to(DEVICE), torch.ones(1, 1, device=DEVICE), torch.zeros(1, 1, device=DEVICE),
                               nonlinearity="relu", backend="triton", fusion=fusion)
        assert torch.equal(torch.isnan(y).cpu(), torch.isnan(expected))
        assert torch.equal(y.cpu()[~torch.isnan(expected)], expected[~torch.isnan(expected)])
