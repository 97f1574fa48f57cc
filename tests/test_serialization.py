"""Whole-model ``torch.save`` / ``torch.load`` with torch's default ``weights_only=True``.

A model holding our layers loads exactly where the same model holding nn's layers loads: torch
knows none of nn's modules as safe either, so the test allows what the nn model needs (read from
the checkpoint by torch) and loads ours under that same list. What comes back is ours, with its
``fusion``/``backend``, computing the same. Also ``pickle``, ``copy.deepcopy`` and state_dicts
between ours and nn's.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

import lstm_triton

from .helpers import DEVICE, rel_err
from .word_lm import WordLM

TORCH_OF = {lstm_triton.LSTM: nn.LSTM, lstm_triton.GRU: nn.GRU, lstm_triton.RNN: nn.RNN}

# case -> (nn's arguments, our extra ones)
LAYERS = {
    "lstm": (dict(), dict(fusion="step")),
    "lstm-2-layers-bidirectional-batch_first": (dict(num_layers=2, bidirectional=True, batch_first=True),
                                                dict(fusion="cell")),
    "lstm-proj_size": (dict(proj_size=2), dict()),
    "gru-bidirectional": (dict(bidirectional=True), dict(fusion="persistent")),
    "rnn-relu-2-layers": (dict(num_layers=2, nonlinearity="relu"), dict()),
}
CLASS_OF = {"lstm": lstm_triton.LSTM, "gru": lstm_triton.GRU, "rnn": lstm_triton.RNN}


def _layer(case: str, ours: bool):
    torch.manual_seed(0)
    cls = CLASS_OF[case.split("-")[0]]
    kwargs, ours_only = LAYERS[case]
    return cls(3, 4, **kwargs, **ours_only) if ours else TORCH_OF[cls](3, 4, **kwargs)


# Models built from nn parts around one recurrent layer; ``layer`` is ours or nn's.
MODELS = {
    "bare": lambda layer: layer,
    "word-lm": lambda layer: WordLM(layer, dropout=0.2),
    "sequential": lambda layer: nn.Sequential(layer),
    "module-list": lambda layer: nn.ModuleList([nn.Linear(3, 3), layer]),
    "module-dict-nested": lambda layer: nn.ModuleDict({"stack": nn.Sequential(nn.ModuleList([layer]))}),
}


def _saved(obj) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def _recurrent(model: nn.Module) -> nn.RNNBase:
    return next(m for m in model.modules() if isinstance(m, nn.RNNBase))


def _kwargs(layer) -> dict:
    return {"fusion": layer.fusion, "backend": layer.backend} if isinstance(layer, tuple(TORCH_OF)) else {}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("case", list(LAYERS))
def test_torch_load_defaults_load_ours_wherever_they_load_nn(case, model):
    """The globals the nn model's checkpoint needs (what torch.load would refuse) are all the
    model with ours needs: ``torch.load`` with its defaults, under that list, gives back our class."""
    ours, theirs = MODELS[model](_layer(case, True)), MODELS[model](_layer(case, False))
    theirs.load_state_dict(ours.state_dict())
    nn_needs = get_unsafe_globals_in_checkpoint(_saved(theirs))
    nn_globals = [torch.nn.modules.rnn.LSTM, torch.nn.modules.rnn.GRU, torch.nn.modules.rnn.RNN,
                  nn.Linear, nn.Embedding, nn.Dropout, nn.Sequential, nn.ModuleList, nn.ModuleDict, WordLM]
    allowed = [g for g in nn_globals if f"{g.__module__}.{g.__qualname__}" in nn_needs]
    assert len(allowed) == len(nn_needs), f"the test's list misses some of {nn_needs}"
    with safe_globals(allowed):
        loaded = torch.load(_saved(ours))
        torch.load(_saved(theirs))  # the list is enough for nn's model too
    layer, original = _recurrent(loaded), _recurrent(ours)
    assert type(layer) is type(original) and _kwargs(layer) == _kwargs(original)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), ours.state_dict().values()))
    if model == "word-lm":
        assert loaded.decoder.weight is loaded.encoder.weight  # tied weights stay tied
    x = torch.randn(2, 2, 3, device=DEVICE)
    layer.eval(), original.eval()
    assert rel_err(layer(x)[0], original(x)[0]) == 0


@pytest.mark.parametrize("cls", [lstm_triton.LSTM, lstm_triton.GRU, lstm_triton.RNN])
def test_torch_load_of_our_bare_layer_needs_no_allowlist(cls):
    loaded = torch.load(_saved(cls(3, 4, fusion="cell", backend="triton")))
    assert type(loaded) is cls and (loaded.fusion, loaded.backend) == ("cell", "triton")
    assert all(w is p for w, p in zip(loaded._flat_weights, loaded.parameters()))


@pytest.mark.parametrize("impl", ["triton", "naive", "nn"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_char_lm_loads_with_torch_defaults_allowing_what_nn_needs(cell, impl):
    """The application's modules (CharLM, the naive layers) are safe globals too, once imported."""
    from lstm_triton.charlm.impls import build_char_lm

    model = build_char_lm(impl, 28, 8, seed=0, cell=cell)
    torch_needs = {"torch.nn.modules.linear.Linear": nn.Linear, "torch.nn.modules.rnn.LSTM": nn.LSTM,
                   "torch.nn.modules.rnn.GRU": nn.GRU, "torch.nn.modules.rnn.RNN": nn.RNN}
    needs = get_unsafe_globals_in_checkpoint(_saved(model))
    assert set(needs) <= set(torch_needs), f"needs more than torch's own modules: {needs}"
    with safe_globals([torch_needs[name] for name in needs]):
        loaded = torch.load(_saved(model))
    assert type(loaded.rnn) is type(model.rnn)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("case", list(LAYERS))
def test_pickle_and_deepcopy_keep_our_class_and_settings(case):
    ours = _layer(case, True)
    x = torch.randn(2, 2, 3, device=DEVICE)
    for twin in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):
        assert type(twin) is type(ours) and _kwargs(twin) == _kwargs(ours)
        assert all(w is p for w, p in zip(twin._flat_weights, twin.parameters()))
        assert rel_err(twin(x)[0], ours(x)[0]) == 0


@pytest.mark.parametrize("case", list(LAYERS))
def test_state_dicts_load_both_ways_between_ours_and_nn(case):
    ours, theirs = _layer(case, True), _layer(case, False)
    with torch.no_grad():
        for p in theirs.parameters():
            p.uniform_(-0.5, 0.5)
    ours.load_state_dict(torch.load(_saved(theirs.state_dict())))
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    back = _layer(case, False)
    back.load_state_dict(torch.load(_saved(ours.state_dict())))
    x = torch.randn(2, 2, 3, device=DEVICE)
    assert rel_err(ours(x)[0], back(x)[0]) <= 1e-5
