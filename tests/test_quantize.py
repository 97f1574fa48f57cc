"""Dynamic quantization (torch.ao.quantization.quantize_dynamic) of models holding our layers.

The quantized model must hold the same modules, and give the same outputs, as the same model built
with torch.nn and quantized the same way. Spellings: our classes in the spec (set or dict), a
submodule name; ``{nn.LSTM}`` and no spec leave our layer float (torch matches exact types), as the
README says.
"""

import re
import warnings

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.quantization import default_dynamic_qconfig, float16_dynamic_qconfig
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_triton
from lstm_triton.layers.quantize import DynamicLSTMFromFused, nn_twin


def quantize_dynamic(*args, **kwargs):
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(*args, **kwargs)


class Model(nn.Module):
    """A recurrent layer nested in containers, a Linear next to it."""

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList([nn.ModuleDict({"rnn": rnn})])
        self.head = nn.Sequential(nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), 4))

    def forward(self, x, hx=None):
        y, states = self.blocks[0]["rnn"](x, hx)
        return self.head(y), states


def twin_models(kind: str, **kwargs):
    ours = Model(getattr(lstm_triton, kind)(5, 6, backend="triton", **kwargs)).eval()
    ref = Model(getattr(nn, kind)(5, 6, **kwargs)).eval()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def flat(out) -> list:
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flat(o)]
    return [out]


def assert_same_modules(q_ours: nn.Module, q_ref: nn.Module) -> None:
    assert [type(m) for m in q_ours.modules()] == [type(m) for m in q_ref.modules()]


CASES = {
    "lstm-2layers": ("LSTM", dict(num_layers=2), False),
    "lstm-bidirectional-batch_first-hx": ("LSTM", dict(bidirectional=True, batch_first=True), True),
    "gru-bidirectional-hx": ("GRU", dict(bidirectional=True), True),
    "gru-2layers-batch_first": ("GRU", dict(num_layers=2, batch_first=True), False),
}


def inputs(kind, kwargs, hx):
    x = torch.randn(3, 4, 5) if kwargs.get("batch_first") else torch.randn(4, 3, 5)  # B = 3, T = 4
    if not hx:
        return (x,)
    lead = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    state = torch.randn(lead, 3, 6)
    return (x, (state, torch.randn(lead, 3, 6)) if kind == "LSTM" else state)


@pytest.mark.parametrize("dtype", [torch.qint8, torch.float16], ids=["qint8", "float16"])
@pytest.mark.parametrize("case", list(CASES))
def test_our_layer_quantizes_as_nn_s(case, dtype):
    kind, kwargs, hx = CASES[case]
    ours, ref = twin_models(kind, **kwargs)
    q_ref = quantize_dynamic(ref, {getattr(nn, kind), nn.Linear}, dtype=dtype)
    q_ours = quantize_dynamic(ours, {getattr(lstm_triton, kind), nn.Linear}, dtype=dtype)
    assert type(q_ours.blocks[0]["rnn"]) is getattr(nnqd, kind)
    assert_same_modules(q_ours, q_ref)
    args = inputs(kind, kwargs, hx)
    for a, b in zip(flat(q_ours(*args)), flat(q_ref(*args)), strict=True):
        assert torch.equal(a, b)
    assert isinstance(ours.blocks[0]["rnn"], getattr(lstm_triton, kind)), "the float model was changed"


@pytest.mark.parametrize("spec", ["dict", "name", "both classes"])
def test_the_other_spellings_of_the_spec(spec):
    ours, ref = twin_models("LSTM")
    q_ref = quantize_dynamic(ref, {nn.LSTM, nn.Linear}, dtype=torch.float16)
    qspec = {"dict": {lstm_triton.LSTM: float16_dynamic_qconfig, nn.Linear: float16_dynamic_qconfig},
             "name": {"blocks.0.rnn", nn.Linear},
             "both classes": {nn.LSTM, lstm_triton.LSTM, nn.Linear}}[spec]
    q_ours = quantize_dynamic(ours, qspec, dtype=torch.float16)
    assert_same_modules(q_ours, q_ref)
    x = torch.randn(3, 4, 5)
    for a, b in zip(flat(q_ours(x)), flat(q_ref(x)), strict=True):
        assert torch.equal(a, b)


def test_packed_sequence_input_to_the_quantized_layer():
    ours, ref = twin_models("LSTM", bidirectional=True)
    q_ours = quantize_dynamic(ours, {lstm_triton.LSTM}, dtype=torch.qint8).blocks[0]["rnn"]
    q_ref = quantize_dynamic(ref, {nn.LSTM}, dtype=torch.qint8).blocks[0]["rnn"]
    packed = pack_padded_sequence(torch.randn(3, 4, 5), [3, 3, 2, 1])
    y_ours, states_ours = q_ours(packed)
    y_ref, states_ref = q_ref(packed)
    assert torch.equal(y_ours.data, y_ref.data) and all(torch.equal(a, b) for a, b in zip(states_ours, states_ref))


def test_our_rnn_stays_float_as_nn_s_does():
    """torch has no dynamic quantized nn.RNN: the Linear is quantized, the RNN stays float (ours on
    the kernels), and the outputs agree."""
    ours, ref = twin_models("RNN", nonlinearity="relu", bidirectional=True)
    q_ref = quantize_dynamic(ref, {nn.RNN, nn.Linear}, dtype=torch.qint8)
    q_ours = quantize_dynamic(ours, {lstm_triton.RNN, nn.Linear}, dtype=torch.qint8)
    assert type(q_ours.blocks[0]["rnn"]) is lstm_triton.RNN
    assert type(q_ours.head[0]) is type(q_ref.head[0]) is nnqd.Linear
    x = torch.randn(3, 4, 5)
    for a, b in zip(flat(q_ours(x)), flat(q_ref(x)), strict=True):
        assert (a - b).abs().max().item() <= 1e-5


@pytest.mark.parametrize("spec", ["nn classes", "default"])
def test_nn_s_classes_and_the_default_spec_leave_our_layer_float(spec):
    """torch looks the exact type up, so {nn.LSTM} and quantize_dynamic's default spec (a fixed dict
    of nn types) do not reach our subclass: it stays float, on the kernels (the README says to name
    our classes)."""
    ours, ref = twin_models("LSTM")
    q_ours = quantize_dynamic(ours, {nn.LSTM, nn.Linear} if spec == "nn classes" else None, dtype=torch.qint8)
    assert type(q_ours.blocks[0]["rnn"]) is lstm_triton.LSTM
    assert type(q_ours.head[0]) is nnqd.Linear
    x = torch.randn(3, 4, 5)
    with torch.no_grad():
        want = quantize_dynamic(ref, {nn.Linear}, dtype=torch.qint8)(x)[0]
        assert (q_ours(x)[0] - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("kwargs", [dict(bias=False), dict(proj_size=3)], ids=["bias=False", "proj_size"])
def test_what_torch_cannot_quantize_fails_as_for_nn(kwargs):
    """torch's from_float refuses bias=False, and ignores proj_size (the quantized layer then fails on
    its first call): ours fails the same way, with the same error."""
    ours, ref = twin_models("LSTM", **kwargs)
    x = torch.randn(4, 3, 5)
    with pytest.raises(Exception) as nn_error:
        quantize_dynamic(ref, {nn.LSTM}, dtype=torch.qint8)(x)
    with pytest.raises(type(nn_error.value), match=re.escape(str(nn_error.value))):
        quantize_dynamic(ours, {lstm_triton.LSTM}, dtype=torch.qint8)(x)


def test_nn_twin_shares_the_parameters():
    layer = lstm_triton.GRU(5, 6, num_layers=2, bidirectional=True, dropout=0.5)
    twin = nn_twin(layer)
    assert type(twin) is nn.GRU and twin.training and twin.dropout == 0.5
    assert all(getattr(twin, n) is getattr(layer, n) for n in layer._flat_weights_names)
    assert all(a is b for a, b in zip(twin._flat_weights, layer._flat_weights, strict=True))
    relu = nn_twin(lstm_triton.RNN(5, 6, nonlinearity="relu"))
    assert type(relu) is nn.RNN and relu.nonlinearity == "relu"


def test_bad_input_is_refused_with_one_line():
    with pytest.raises(TypeError, match="^module must be an LSTM, GRU or RNN .*got Linear$"):
        nn_twin(nn.Linear(2, 2))
    plain = nn.LSTM(5, 6)
    plain.qconfig = default_dynamic_qconfig
    with pytest.raises(TypeError, match="^from_float: mod must be an lstm_triton.LSTM, got LSTM$"):
        DynamicLSTMFromFused.from_float(plain)
