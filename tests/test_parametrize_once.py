"""A weight under ``torch.nn.utils.parametrize`` is evaluated once per forward of our layers.

Counted with a parametrization that counts its own calls, on every parametrizable kind of
tensor (input and recurrent weights, biases, the projection), on both backends, for LSTM, GRU and
RNN. nn's own forward reads a parametrized weight up to four times (its ``_flat_weights`` refresh),
so ``spectral_norm`` in training mode would step its power iteration as often; ours steps it once,
which is nn's result under ``parametrize.cached()``.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import lstm_triton

from .helpers import DEVICE, rel_err

CLASSES = {"LSTM": (lstm_triton.LSTM, nn.LSTM), "GRU": (lstm_triton.GRU, nn.GRU), "RNN": (lstm_triton.RNN, nn.RNN)}


class Counting(nn.Module):
    """The identity (times 1), counting its evaluations per tensor name."""

    def __init__(self, counts: collections.Counter, name: str):
        super().__init__()
        self.counts, self.name = counts, name

    def forward(self, w):
        self.counts[self.name] += 1
        return w * 1.0


def _counted(cell: str, backend: str, names: tuple[str, ...], **kwargs):
    torch.manual_seed(0)
    layer = CLASSES[cell][0](3, 4, backend=backend, device=DEVICE, **kwargs)
    counts = collections.Counter()
    for name in names:
        parametrize.register_parametrization(layer, name, Counting(counts, name))
    counts.clear()  # registering evaluates the parametrization too
    return layer, counts


CASES = [
    pytest.param("LSTM", ("weight_hh_l0",), {}, id="lstm-weight_hh"),
    pytest.param("LSTM", ("weight_ih_l0", "bias_hh_l0", "weight_hh_l1_reverse"),
                 dict(num_layers=2, bidirectional=True), id="lstm-2-layers-bidirectional-weight_ih-bias-reverse"),
    pytest.param("LSTM", ("weight_hr_l0", "weight_hh_l0"), dict(proj_size=2, batch_first=True),
                 id="lstm-proj_size-batch_first"),
    pytest.param("GRU", ("weight_hh_l0", "weight_ih_l0"), {}, id="gru"),
    pytest.param("RNN", ("weight_hh_l0", "bias_ih_l0"), dict(nonlinearity="relu"), id="rnn-relu"),
]


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize(("cell", "names", "kwargs"), CASES)
def test_each_parametrized_tensor_is_evaluated_once_per_forward(cell, names, kwargs, backend):
    layer, counts = _counted(cell, backend, names, **kwargs)
    x = torch.randn(2, 2, 3, device=DEVICE)
    for call in range(1, 3):
        out = layer(x)[0]
        assert counts == {name: call for name in names}, f"after {call} forward(s): {dict(counts)}"
    out.sum().backward()  # backward reuses what forward computed
    assert counts == {name: 2 for name in names}


def test_inside_a_user_cache_the_weight_is_evaluated_once_for_all_calls_and_the_cache_survives():
    layer, counts = _counted("LSTM", "triton", ("weight_hh_l0",))
    x = torch.randn(2, 2, 3, device=DEVICE)
    with parametrize.cached():
        layer(x)
        layer(x)
        first = layer.weight_hh_l0
        assert counts["weight_hh_l0"] == 1 and layer.weight_hh_l0 is first  # our call left the user's cache in place
    layer(x)
    assert counts["weight_hh_l0"] == 2


@pytest.mark.parametrize("cell", list(CLASSES))
def test_spectral_norm_steps_its_power_iteration_once_per_training_forward(cell):
    """Three training-mode forwards: ours equals nn's layer run under parametrize.cached() (one
    power-iteration step per forward), outputs and the iteration's vector ``_u`` alike."""
    ours_cls, nn_cls = CLASSES[cell]
    torch.manual_seed(0)
    ours = ours_cls(3, 4, backend="triton", device=DEVICE)
    ref = nn_cls(3, 4, device=DEVICE)
    ref.load_state_dict(ours.state_dict())
    for m in (ours, ref):
        torch.manual_seed(5)  # the same random start vector
        parametrizations.spectral_norm(m, "weight_hh_l0")
    x = torch.randn(4, 2, 3, device=DEVICE)
    for step in range(3):
        got = ours(x)[0]
        with parametrize.cached():
            want = ref(x)[0]
        assert rel_err(got, want) <= 1e-5, f"forward {step}"
        u_ours = ours.parametrizations.weight_hh_l0[0]._u
        u_ref = ref.parametrizations.weight_hh_l0[0]._u
        assert rel_err(u_ours, u_ref) <= 1e-6, f"power iteration after forward {step}"


class _FromFlat(nn.Module):
    """A parametrization that changes shape: the stored original is flat, the weight a matrix."""

    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, flat):
        return flat.view(self.shape)

    def right_inverse(self, w):
        return w.reshape(-1)


def test_a_shape_changing_parametrization_is_checked_on_the_weight_it_gives():
    """The shape check reads the evaluated weight (the original may have any shape): a flat
    original that gives the right matrix runs, one that gives another shape is refused by name."""
    torch.manual_seed(0)
    ours = lstm_triton.LSTM(3, 4, backend="triton", device=DEVICE)
    ref = nn.LSTM(3, 4, device=DEVICE)
    ref.load_state_dict(ours.state_dict())
    parametrize.register_parametrization(ours, "weight_hh_l0", _FromFlat((16, 4)), unsafe=True)
    assert ours.parametrizations.weight_hh_l0.original.shape == (64,)
    x = torch.randn(2, 2, 3, device=DEVICE)
    assert rel_err(ours(x)[0], ref(x)[0]) <= 1e-5
    ours.parametrizations.weight_hh_l0[0].shape = (4, 16)
    with pytest.raises(RuntimeError, match=r"weight_hh_l0 must have shape \(16, 4\), got \(4, 16\)"):
        ours(x)
