"""CUDA graphs: forward+backward of every level and cell captured in ``torch.cuda.graph`` replays
to eager's results, and ``torch.compile(mode="reduce-overhead")`` (CUDA graphs under the hood)
trains the char LM as eager does.

Needs a GPU (the GPU check runs it). That nothing on these paths reads the device or copies from the
host per call — what capture requires — is checked on the CPU by tests/test_no_host_sync.py.
"""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_triton

from .helpers import char_lm_losses, rel_err

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")]

LAYERS = {
    "lstm": lambda: lstm_triton.LSTM(28, 64),
    "lstm-proj": lambda: lstm_triton.LSTM(28, 64, proj_size=32),
    "gru": lambda: lstm_triton.GRU(28, 64),
    "rnn": lambda: lstm_triton.RNN(28, 64),
}
KINDS = ["dense", "lengths", "packed"]
LENGTHS = [35, 20, 1, 35, 7, 0, 12, 30]


@pytest.fixture(autouse=True)
def no_host_check(monkeypatch):
    """The opt-in barrier host check reads the device: no capture could contain it."""
    from lstm_triton.kernels import lstm_persistent

    monkeypatch.setattr(lstm_persistent, "CHECK_BARRIER_ON_HOST", False)


def _make_input(x, kind):
    """The layer's input; a PackedSequence is packed outside the capture (torch's packing copies its
    sorting indices to the device), as a user captures the layer, not the packing."""
    if kind != "packed":
        return x
    return pack_padded_sequence(x, torch.tensor([max(n, 1) for n in LENGTHS]), enforce_sorted=False)


def _step(layer, inp, w, kind):
    out = layer(inp, lengths=LENGTHS)[0] if kind == "lengths" else layer(inp)[0]
    y = out.data if kind == "packed" else out
    (y.float() * w[: y.shape[0]]).sum().backward()
    return y


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fusion", ["cell", "step", "persistent"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_captured_forward_and_backward_replay_to_eager(name, fusion, kind):
    torch.manual_seed(0)
    layer = LAYERS[name]().cuda()
    layer.fusion = fusion
    T, B = 35, len(LENGTHS)
    static = _make_input(torch.randn(T, B, 28, device="cuda"), kind)
    width = layer.proj_size or layer.hidden_size
    w = torch.randn(T * B, width, device="cuda") if kind == "packed" else torch.randn(T, B, width, device="cuda")

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture: compiles, caches the lengths pattern
        for _ in range(2):
            layer.zero_grad(set_to_none=True)
            _step(layer, static, w, kind)
    torch.cuda.current_stream().wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    layer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_y = _step(layer, static, w, kind)
    static_grads = [p.grad for p in layer.parameters()]  # the graph writes these on every replay

    for seed in (1, 2):  # new data through the same graph
        torch.manual_seed(seed)
        fresh = _make_input(torch.randn(T, B, 28, device="cuda"), kind)
        (static.data if kind == "packed" else static).copy_(fresh.data if kind == "packed" else fresh)
        graph.replay()
        captured = [static_y.clone()] + [g.clone() for g in static_grads]
        layer.zero_grad(set_to_none=True)
        eager = [_step(layer, fresh, w, kind)] + [p.grad for p in layer.parameters()]
        for a, b in zip(captured, eager):
            assert rel_err(a, b) <= 1e-5


def test_reduce_overhead_compile_trains_the_char_lm_as_eager():
    eager = char_lm_losses("triton", steps=6, hidden=256, device="cuda")
    compiled = char_lm_losses("triton", steps=6, hidden=256, device="cuda", compile_mode="reduce-overhead")
    assert float(((compiled - eager).abs() / eager).max()) <= 1e-4
