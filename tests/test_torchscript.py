"""torch.jit.script of a model holding our layers fails with one line naming the routes that work
(torch.jit.trace, torch.compile, torch.export), and leaves the model as it was; the first of those
routes is checked here against torch.nn."""

import warnings

import pytest
import torch
from torch import nn

import lstm_triton


def script(model):
    with warnings.catch_warnings():  # torch.jit.script's own deprecation notice
        warnings.simplefilter("ignore")
        return torch.jit.script(model)


class Model(nn.Module):
    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.body = nn.ModuleDict({"pre": nn.Identity(), "rnn": rnn})
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        y, _ = self.body["rnn"](self.body["pre"](x))
        return self.head(y)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_script_fails_with_one_line_naming_the_working_routes(kind):
    model = Model(getattr(lstm_triton, kind)(5, 6))
    with pytest.raises(RuntimeError) as error:
        script(model)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"torch.jit.script cannot compile lstm_triton.{kind} ")
    for route in ("torch.jit.trace", "torch.compile", "torch.export"):
        assert route in message
    assert type(model.body["rnn"]) is getattr(lstm_triton, kind), "the model was changed"


def test_script_of_the_layer_itself_fails_the_same_way():
    with pytest.raises(RuntimeError, match=r"^torch.jit.script cannot compile lstm_triton.LSTM .*torch.jit.trace"):
        script(lstm_triton.LSTM(5, 6, num_layers=2))


def test_nn_s_layer_still_scripts():
    """Only our classes refuse: a model holding nn.LSTM next to nothing of ours scripts as before."""
    scripted = script(Model(nn.LSTM(5, 6)))
    assert scripted(torch.randn(4, 3, 5)).shape == (4, 3, 2)


def test_trace_works_and_matches_nn():
    ours = Model(lstm_triton.GRU(5, 6, backend="triton")).eval()
    ref = Model(nn.GRU(5, 6)).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 3, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values in the layer's checks
        traced = torch.jit.trace(ours, (x,))
    x2 = torch.randn(4, 3, 5)
    with torch.no_grad():
        assert (traced(x2) - ref(x2)).abs().max().item() <= 1e-5
