"""ONNX export of models holding lstm_triton's LSTM / GRU / RNN, with both exporters.

Each export must hold the same ONNX operators as the export of the same model built with torch.nn
(ONNX's LSTM / GRU / RNN; the dynamo exporter unrolls nn.RNN), and onnxruntime must reproduce our
eager output (the Triton kernels, under the interpreter here) within 1e-5 in fp32. What ONNX cannot
represent (proj_size, ``lengths=``) fails with one line.
"""

import collections
import contextlib
import io

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_triton

onnx = pytest.importorskip("onnx", reason="onnx is a dev dependency (pip install -e .[dev])")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a dev dependency (pip install -e .[dev])")

EXPORTERS = {"torchscript": False, "dynamo": True}
TOL = 1e-5


def _dynamo_exporter_available() -> bool:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def exporter_params():
    needs_onnxscript = pytest.mark.skipif(not _dynamo_exporter_available(),
                                          reason="the dynamo exporter needs onnxscript (a dev dependency)")
    return [pytest.param(False, id="torchscript"), pytest.param(True, id="dynamo", marks=needs_onnxscript)]


class Returns(nn.Module):
    """The layer's output and every final state as a flat tuple (what an ONNX graph returns)."""

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, hx=None):
        y, states = self.rnn(x, hx)
        return (y, *states) if isinstance(states, tuple) else (y, states)


def export(model: nn.Module, args: tuple, dynamo: bool):
    """The ONNX ModelProto of ``model`` on ``args`` (exporter chatter silenced)."""
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        if dynamo:
            return torch.onnx.export(model, args, dynamo=True, verbose=False).model_proto
        buf = io.BytesIO()
        torch.onnx.export(model, args, buf, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def op_counts(proto) -> collections.Counter:
    return collections.Counter(node.op_type for node in proto.graph.node)


def run_onnxruntime(proto, tensors: list) -> list:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(tensors), f"the graph takes {names}, the model got {len(tensors)} tensors"
    return [torch.from_numpy(out) for out in session.run(None, dict(zip(names, (t.numpy() for t in tensors))))]


def flat(args) -> list:
    out = []
    for a in args:
        if isinstance(a, (tuple, list)):
            out += flat(a)
        elif a is not None:
            out.append(a)
    return out


def twins(kind: str, **kwargs):
    """Ours (on the kernels) and torch.nn's layer of the same kind with the same weights, in eval mode."""
    ours = getattr(lstm_triton, kind)(5, 6, backend="triton", **kwargs).eval()
    ref = getattr(nn, kind)(5, 6, **kwargs).eval()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def inputs(kind: str, *, T=4, B=3, batch_first=False, unbatched=False, hx=False, num_layers=1,
           bidirectional=False, **_):
    x = torch.randn(T, 5) if unbatched else torch.randn(*((B, T) if batch_first else (T, B)), 5)
    if not hx:
        return (x,)
    lead = (num_layers * (2 if bidirectional else 1),) + (() if unbatched else (B,))
    state = torch.randn(*lead, 6)
    return (x, (state, torch.randn(*lead, 6)) if kind == "LSTM" else state)


# Every case runs with the TorchScript-based exporter; the dynamo exporter (several seconds an export
# on a CPU) runs the GRU and RNN ones below that hold every option between them, and the LSTM in
# test_a_word_language_model_holding_our_lstm_in_a_container_exports.
CASES = {
    "lstm-2layers-bidirectional-hx": ("LSTM", dict(num_layers=2, bidirectional=True), dict(hx=True)),
    "gru-bidirectional-batch_first-hx": ("GRU", dict(bidirectional=True, batch_first=True), dict(hx=True)),
    "rnn-relu-2layers-batch_first-unbatched": ("RNN", dict(nonlinearity="relu", num_layers=2, batch_first=True),
                                               dict(unbatched=True)),
    "lstm-batch_first-nobias-dropout": ("LSTM", dict(batch_first=True, bias=False, num_layers=2, dropout=0.3), {}),
    "gru-unbatched-nobias": ("GRU", dict(bias=False), dict(unbatched=True)),
    "rnn-tanh-bidirectional-hx": ("RNN", dict(bidirectional=True), dict(hx=True)),
}
DYNAMO_CASES = list(CASES)[1:3]


def case_params():
    return [pytest.param(case, p.values[0], id=f"{case}-{p.id}", marks=p.marks)
            for case in CASES for p in exporter_params() if not p.values[0] or case in DYNAMO_CASES]


@pytest.mark.parametrize("case, dynamo", case_params())
def test_exports_nn_s_onnx_operators_and_onnxruntime_matches_ours(case, dynamo):
    kind, kwargs, shape = CASES[case]
    ours, ref = twins(kind, **kwargs)
    args = inputs(kind, **kwargs, **shape)
    with torch.no_grad():
        want = Returns(ours)(*args)  # the Triton kernels (interpreter)
        assert max((a - b).abs().max().item() for a, b in zip(want, Returns(ref)(*args))) <= TOL

    proto = export(Returns(ours), args, dynamo)
    assert op_counts(proto) == op_counts(export(Returns(ref), args, dynamo)), "not the graph nn's layer exports to"
    got = run_onnxruntime(proto, flat(args))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert (g - w).abs().max().item() <= TOL


class WordLM(nn.Module):
    """PyTorch's examples/word_language_model RNNModel, reduced: embedding, a recurrent layer held in
    a container, a decoder; the hidden state is an input and an output, as in its --onnx-export."""

    def __init__(self, rnn: nn.Module, ntoken: int = 11):
        super().__init__()
        self.encoder = nn.Embedding(ntoken, 5)
        self.body = nn.ModuleDict({"rnn": rnn, "drop": nn.Dropout(0.2)})
        self.decoder = nn.Linear(6 * (2 if rnn.bidirectional else 1), ntoken)

    def forward(self, tokens, hidden):
        output, hidden = self.body["rnn"](self.body["drop"](self.encoder(tokens)), hidden)
        return (self.decoder(self.body["drop"](output)), *hidden)


@pytest.mark.parametrize("dynamo", exporter_params())
def test_a_word_language_model_holding_our_lstm_in_a_container_exports(dynamo):
    ours, ref = twins("LSTM", num_layers=2, dropout=0.5, bidirectional=True)
    model, ref_model = WordLM(ours).eval(), WordLM(ref).eval()
    ref_model.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 11, (4, 3))
    hidden = (torch.randn(4, 3, 6), torch.randn(4, 3, 6))
    with torch.no_grad():
        want = model(tokens, hidden)
    proto = export(model, (tokens, hidden), dynamo)
    assert op_counts(proto) == op_counts(export(ref_model, (tokens, hidden), dynamo))
    assert op_counts(proto)["LSTM"] == 2
    for g, w in zip(run_onnxruntime(proto, [tokens, *hidden]), want, strict=True):
        assert (g - w).abs().max().item() <= TOL


class PackedLSTM(nn.Module):
    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, lengths):
        y, (h, c) = self.rnn(pack_padded_sequence(x, lengths))
        return pad_packed_sequence(y)[0], h, c


def test_packed_sequence_input_exports_as_nn_s_does():
    """PackedSequence: the TorchScript-based exporter handles nn's packing, and so ours (the dynamo
    exporter fails on nn's packing, and on ours the same way)."""
    ours, ref = twins("LSTM", bidirectional=True)
    x, lengths = torch.randn(4, 3, 5), torch.tensor([4, 3, 2])
    with torch.no_grad():
        want = PackedLSTM(ours)(x, lengths)
    proto = export(PackedLSTM(ours), (x, lengths), dynamo=False)
    assert op_counts(proto) == op_counts(export(PackedLSTM(ref), (x, lengths), dynamo=False))
    for g, w in zip(run_onnxruntime(proto, [x, lengths]), want, strict=True):
        assert (g - w).abs().max().item() <= TOL


def test_the_functional_form_exports_as_torch_s_lstm():
    class Functional(nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            w = self.layer
            return lstm_triton.lstm(x, w.weight_ih_l0, w.weight_hh_l0, w.bias_ih_l0, w.bias_hh_l0)[0]

    model = Functional(nn.LSTM(5, 6))
    x = torch.randn(4, 3, 5)
    with torch.no_grad():
        want = model(x)
    proto = export(model, (x,), dynamo=False)
    assert op_counts(proto)["LSTM"] == 1
    assert (run_onnxruntime(proto, [x])[0] - want).abs().max().item() <= TOL


@pytest.mark.parametrize("dynamo", exporter_params())
def test_proj_size_fails_with_one_line_naming_it(dynamo):
    """ONNX's LSTM has no projection: nn's exporters fail (TorchScript) or write a model onnxruntime
    rejects (dynamo); ours fails at export, naming proj_size."""
    with pytest.raises(Exception, match=r"proj_size=3 cannot be exported to ONNX: ONNX's LSTM operator has no proj"):
        export(Returns(lstm_triton.LSTM(5, 6, proj_size=3)), (torch.randn(4, 3, 5),), dynamo)


def test_lengths_fails_with_one_line_naming_it():
    class WithLengths(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = lstm_triton.GRU(5, 6)

        def forward(self, x, lengths):
            return self.rnn(x, lengths=lengths)[0]

    with pytest.raises(torch.onnx.errors.OnnxExporterError, match=r"^lengths= cannot be exported to ONNX .*"
                       r"pack_padded_sequence"):
        export(WithLengths(), (torch.randn(4, 3, 5), torch.tensor([4, 2, 1])), dynamo=False)


def test_outside_export_the_kernels_run():
    """The export switch is off outside export: eager calls still choose the Triton backend."""
    from lstm_triton.layers.backend import choose_backend
    from lstm_triton.layers.export import in_onnx_export

    assert not in_onnx_export()
    assert choose_backend("auto", torch.device("cpu"), torch.float32) == "triton"
