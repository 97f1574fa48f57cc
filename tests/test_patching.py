"""``lstm_triton.patch(model)`` / ``unpatch(model)``: every nn.LSTM/GRU/RNN inside a model becomes
ours in place, and back, sharing parameters, optimizer state, hooks, parametrizations and
weight-drop wrappers. Trained on the word_language_model example's shape against the same model
left to torch.nn.
"""

from __future__ import annotations

import collections
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize
from torch.serialization import safe_globals

import lstm_triton

from .helpers import DEVICE, rel_err
from .word_lm import WordLM, train_losses

OURS = {nn.LSTM: lstm_triton.LSTM, nn.GRU: lstm_triton.GRU, nn.RNN: lstm_triton.RNN}
RECURRENT = {
    "lstm": lambda: nn.LSTM(6, 6, num_layers=2, dropout=0.3),
    "gru": lambda: nn.GRU(6, 6, num_layers=2, dropout=0.3),
    "rnn-tanh": lambda: nn.RNN(6, 6, num_layers=2, dropout=0.3),
}


def _word_lm(kind: str) -> WordLM:
    torch.manual_seed(0)
    return WordLM(RECURRENT[kind]()).to(DEVICE)


def _fresh_nn_keys(layer: nn.RNNBase) -> set[str]:
    return set(type(layer)(layer.input_size, layer.hidden_size).__dict__)


@pytest.mark.parametrize("kind", list(RECURRENT))
def test_a_patched_word_lm_trains_as_the_nn_one_with_the_optimizer_made_before(kind):
    """The example's model (tied weights, 2 layers, dropout everywhere, repackaged state, clipped
    gradients): patched after its optimizer (SGD with momentum: state per parameter) was made, it
    trains step for step as an untouched twin, and that optimizer moves the patched model's weights."""
    reference, model = _word_lm(kind), _word_lm(kind)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=1.0, momentum=0.9)
    opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    before = list(model.parameters())
    assert lstm_triton.patch(model, backend="triton") is model
    assert type(model.rnn) is OURS[type(reference.rnn)] and model.rnn.backend == "triton"
    assert all(a is b for a, b in zip(model.parameters(), before))
    assert model.decoder.weight is model.encoder.weight
    got, want = train_losses(model, opt), train_losses(reference, ref_opt)
    assert rel_err(torch.tensor(got), torch.tensor(want)) <= 1e-5, (got, want)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert rel_err(p, q) <= 1e-5, name
    assert all(opt.state[p]["momentum_buffer"] is not None for p in model.parameters())


CONTAINERS = {
    "sequential": lambda: nn.Sequential(nn.Linear(3, 3), nn.LSTM(3, 4, batch_first=True)),
    "module-list-bidirectional-gru": lambda: nn.ModuleList([nn.GRU(3, 4, bidirectional=True), nn.Linear(8, 2)]),
    "module-dict-nested-proj_size-relu": lambda: nn.ModuleDict({
        "a": nn.Sequential(nn.ModuleList([nn.LSTM(3, 4, proj_size=2, num_layers=2)])),
        "b": nn.RNN(3, 4, nonlinearity="relu")}),
    "the-layer-itself": lambda: nn.LSTM(3, 4, bidirectional=True, batch_first=True),
    "shared-twice": lambda: (lambda shared: nn.ModuleList([shared, nn.Sequential(shared)]))(nn.GRU(3, 4)),
}


def _layers(model: nn.Module) -> list[nn.RNNBase]:
    return [m for m in model.modules() if isinstance(m, nn.RNNBase)]


@pytest.mark.parametrize("case", list(CONTAINERS))
def test_patch_swaps_every_layer_in_containers_and_unpatch_gives_torch_own_classes(case):
    torch.manual_seed(0)
    model = CONTAINERS[case]().to(DEVICE)
    reference = copy.deepcopy(model)
    lstm_triton.patch(model, fusion="step", backend="triton")
    x = torch.randn(2, 2, 3, device=DEVICE)
    for ours, theirs in zip(_layers(model), _layers(reference)):
        assert type(ours) is OURS[type(theirs)] and (ours.fusion, ours.backend) == ("step", "triton")
        assert rel_err(ours(x)[0], theirs(x)[0]) <= 1e-5
    lstm_triton.unpatch(model)
    for layer, theirs in zip(_layers(model), _layers(reference)):
        assert type(layer) is type(theirs)
        assert set(layer.__dict__) == set(theirs.__dict__) == _fresh_nn_keys(theirs)  # nothing of ours left


def test_hooks_registered_before_the_patch_keep_firing():
    torch.manual_seed(0)
    layer = nn.LSTM(3, 4).to(DEVICE)
    seen = collections.Counter()
    layer.register_forward_pre_hook(lambda m, args: seen.update(["pre"]))
    layer.register_forward_hook(lambda m, args, out: seen.update(["post"]))
    layer.weight_hh_l0.register_hook(lambda g: seen.update(["grad"]))
    lstm_triton.patch(layer, backend="triton")
    layer(torch.randn(2, 2, 3, device=DEVICE))[0].sum().backward()
    assert seen == {"pre": 1, "post": 1, "grad": 1}


class _Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, w):
        self.calls += 1
        return w * 1.0


def test_a_parametrized_layer_stays_parametrized_through_patch_and_unpatch():
    """torch gives a parametrized module a class of its own (ParametrizedLSTM over nn.LSTM): patch
    rebuilds it over ours, so the weight stays parametrized (evaluated once per forward),
    serialisation is refused as nn refuses it, and removing the parametrization leaves ours."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.LSTM(3, 4, num_layers=2)).to(DEVICE)
    parametrizations.weight_norm(model[0], "weight_hh_l0")
    counting = _Counting()
    parametrize.register_parametrization(model[0], "bias_ih_l1", counting)
    reference = copy.deepcopy(model)
    lstm_triton.patch(model, backend="triton")
    layer = model[0]
    assert isinstance(layer, lstm_triton.LSTM) and type(layer).__name__ == "ParametrizedLSTM"
    assert parametrize.type_before_parametrizations(layer) is lstm_triton.LSTM
    x = torch.randn(2, 2, 3, device=DEVICE)
    counting.calls = 0
    out = layer(x)[0]
    assert counting.calls == 1
    assert rel_err(out, reference[0](x)[0]) <= 1e-5
    out.sum().backward()
    assert layer.parametrizations.weight_hh_l0.original1.grad is not None
    refusals = []
    for m in (model, reference):
        with pytest.raises(RuntimeError, match="Serialization of parametrized modules") as refused:
            torch.save(m, io.BytesIO())
        refusals.append(str(refused.value))
    assert refusals[0] == refusals[1]
    lstm_triton.unpatch(model)
    assert parametrize.type_before_parametrizations(model[0]) is nn.LSTM and parametrize.is_parametrized(model[0])
    assert rel_err(model[0](x)[0], reference[0](x)[0]) <= 1e-5
    lstm_triton.patch(model)
    parametrize.remove_parametrizations(model[0], "weight_hh_l0")
    parametrize.remove_parametrizations(model[0], "bias_ih_l1")
    assert type(model[0]) is lstm_triton.LSTM


class WeightDrop(nn.Module):
    """AWD-LSTM's weight-drop wrapper (salesforce/awd-lstm-lm, weight_drop.py): the named weights
    become plain tensors recomputed each forward as dropout of a ``<name>_raw`` parameter."""

    def __init__(self, module: nn.Module, weights: list[str], dropout: float):
        super().__init__()
        self.module, self.weights, self.dropout = module, weights, dropout
        for name in weights:
            raw = getattr(module, name)
            del module._parameters[name]
            module.register_parameter(f"{name}_raw", nn.Parameter(raw.data))
        module.flatten_parameters = lambda *args, **kwargs: None  # the weights are not one flat buffer any more

    def forward(self, *args):
        for name in self.weights:
            raw = getattr(self.module, f"{name}_raw")
            setattr(self.module, name, F.dropout(raw, p=self.dropout, training=self.training))
        return self.module(*args)


def test_a_weight_drop_wrapper_trains_the_same_patched():
    def build():
        torch.manual_seed(0)
        model = WordLM(nn.LSTM(6, 6, num_layers=2, dropout=0.3)).to(DEVICE)
        model.rnn = WeightDrop(model.rnn, ["weight_hh_l0", "weight_hh_l1"], dropout=0.5)
        return model

    reference, model = build(), build()
    ref_opt, opt = (torch.optim.SGD(m.parameters(), lr=1.0) for m in (reference, model))
    lstm_triton.patch(model, backend="triton")
    assert type(model.rnn.module) is lstm_triton.LSTM
    got, want = train_losses(model, opt), train_losses(reference, ref_opt)
    assert rel_err(torch.tensor(got), torch.tensor(want)) <= 1e-5, (got, want)
    assert rel_err(model.rnn.module.weight_hh_l1_raw, reference.rnn.module.weight_hh_l1_raw) <= 1e-5


def test_a_patched_model_saves_and_loads_as_ours_and_an_unpatched_one_as_torch():
    torch.manual_seed(0)
    model = WordLM(nn.LSTM(6, 6, num_layers=2, dropout=0.3))
    allowed = [WordLM, nn.Dropout, nn.Embedding, nn.Linear, nn.LSTM]  # what the nn model needs
    for swap, expected in ((lstm_triton.patch, lstm_triton.LSTM), (lstm_triton.unpatch, nn.LSTM)):
        swap(model)
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        with safe_globals(allowed):
            assert type(torch.load(buf).rnn) is expected


def test_patch_is_idempotent_and_leaves_subclasses_with_code_of_their_own():
    class MyLSTM(nn.LSTM):
        def forward(self, *args):
            return super().forward(*args)

    model = nn.Sequential(nn.LSTM(3, 4), MyLSTM(3, 4), lstm_triton.GRU(3, 4, fusion="cell"))
    with pytest.warns(UserWarning, match=r"patch: 1 is a .*MyLSTM, a subclass of torch's class: left as it is"):
        lstm_triton.patch(model)
    assert [type(m) for m in model] == [lstm_triton.LSTM, MyLSTM, lstm_triton.GRU] and model[2].fusion == "cell"
    with pytest.warns(UserWarning, match="MyLSTM"):
        lstm_triton.patch(model)
    assert [type(m) for m in model] == [lstm_triton.LSTM, MyLSTM, lstm_triton.GRU]
    lstm_triton.unpatch(model)
    assert [type(m) for m in model] == [nn.LSTM, MyLSTM, nn.GRU]


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: lstm_triton.patch(42), TypeError, "patch: model must be a torch.nn.Module, got int"),
    (lambda: lstm_triton.unpatch([nn.LSTM(3, 4)]), TypeError, "unpatch: model must be a torch.nn.Module, got list"),
    (lambda: lstm_triton.patch(nn.LSTM(3, 4), fusion="fast"), ValueError, "fusion must be one of auto, cell, step"),
    (lambda: lstm_triton.patch(nn.LSTM(3, 4), backend="cuda"), ValueError, "backend must be one of auto, triton"),
], ids=["patch-int", "unpatch-list", "bad-fusion", "bad-backend"])
def test_bad_arguments_are_refused_in_one_line(call, error, message):
    with pytest.raises(error, match=message):
        call()
