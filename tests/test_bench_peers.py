"""The benchmark's peers (bench/peers/): their weight conversions against float64 torch.nn on the
CPU, their skip reasons, the fp32 precision switch, and the report's accuracy, first-call and
robustness sections.

What runs here without the peers installed (CI does not install ``lstm-triton[peers]``): the
FlashRNN conversion through a float64 re-expression of FlashRNN's documented recurrence (its
``vanilla`` backend's pointwise functions), TorchRL's adapter through a float64 function with
``lstm_triton``/``gru_triton``'s contract (TorchRL's kernels cannot run on a CPU: every launch is
under ``torch.cuda.device``, the autotuner needs a GPU driver and the interpreter cannot run
``libdevice.tanh``), and the compiled loop under ``aot_eager`` (dynamo + AOT autograd, no code
generation: inductor's compile is what make bench's cpu profile times). With FlashRNN installed,
its own ``vanilla`` backend is checked too (``pytest.importorskip``).
"""

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from bench.measure import check_against_reference
from bench.peers import flashrnn as frnn
from bench.peers import torchrl_triton as trl
from bench.providers import reference_weights, status

T, B, I, H = 4, 3, 5, 6
EXACT = 1e-12  # float64 layers against float64 torch.nn: only rounding


def _float64_weights(cell):
    return {k: v.double() for k, v in reference_weights(I, H, 0, cell).items()}


def _check(layer, cell, dtype=torch.float64):
    return check_against_reference(layer, "forward_backward", T, B, I, H, "cpu", dtype, 0, cell)


# ------------------------------------------------------------------------------------- FlashRNN


def _flashrnn_contract(Wx, R, b, states, function, backend, dtype):
    """FlashRNN's one-head recurrence as its vanilla backend computes it (flashrnn/vanilla/*.py):
    ``Ry[g] = R[g] @ y``; LSTM gates [i, f, z, o] on ``Wx + Ry + b``; GRU ``Wx`` [r, z, n], ``R``
    [n, r, z], ``b`` [b_hn, b_r, b_z, b_in]; elman ``tanh(Wx + Ry + b)``. Returns FlashRNN's
    ``(steps (S, B, T, 1, D), last (S, B, 1, 1, D))``."""
    assert backend == "vanilla" and dtype == "float64"
    state = [s[:, 0, 0, :] for s in states]  # (B, D) each
    outs = []
    for t in range(Wx.shape[1]):
        wx = Wx[:, t, :, 0, :]  # (B, G, D)
        ry = torch.einsum("gdp,bp->bgd", R[:, 0], state[0])
        if function == "lstm":
            i, f, z, o = (wx + ry + b[None, :, 0]).unbind(1)
            c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(z)
            state = [torch.sigmoid(o) * torch.tanh(c), c]
        elif function == "gru":
            g = ry[:, 0] + b[0, 0]
            r = torch.sigmoid(wx[:, 0] + ry[:, 1] + b[1, 0])
            z = torch.sigmoid(wx[:, 1] + ry[:, 2] + b[2, 0])
            state = [z * state[0] + (1 - z) * torch.tanh(wx[:, 2] + b[3, 0] + r * g)]
        else:
            state = [torch.tanh(wx[:, 0] + ry[:, 0] + b[None, 0, 0])]
        outs.append(torch.stack(state))
    steps = torch.stack(outs, dim=2)[:, :, :, None, :]
    return steps, steps[:, :, -1:]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_flashrnn_conversion_matches_float64_nn_and_a_wrong_one_fails(cell, monkeypatch):
    layer = frnn.FlashRNNLayer(_float64_weights(cell), "cpu", torch.float64, cell, "vanilla", _flashrnn_contract)
    errors = _check(layer, cell)
    assert {"output", "h_n", "d_input", "d_h0", "d_weight_ih_l0", "d_weight_hh_l0", "d_bias_hh_l0"} <= set(errors)
    assert ("c_n" in errors and "d_c0" in errors) == (cell == "lstm")
    assert max(errors.values()) <= EXACT, errors
    right = frnn.flashrnn_weights
    if cell == "gru":  # nn.GRU's row order [r, z, n] left as it is: FlashRNN's R wants [n, r, z]
        wrong = lambda c, w_ih, w_hh, b_ih, b_hh: (w_hh.view(3, 1, H, H), right(c, w_ih, w_hh, b_ih, b_hh)[1])
    else:  # the recurrent bias left out of the sum
        wrong = lambda c, w_ih, w_hh, b_ih, b_hh: right(c, w_ih, w_hh, b_ih, 0 * b_hh)
    monkeypatch.setattr(frnn, "flashrnn_weights", wrong)
    assert _check(layer, cell)["output"] > 1e-3


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_flashrnn_vanilla_backend_itself_matches_float64_nn(cell):
    """FlashRNN's own PyTorch backend (needs ``flashrnn``: CI does not install the peers)."""
    pytest.importorskip("flashrnn")
    layer = frnn.FlashRNNLayer(_float64_weights(cell), "cpu", torch.float64, cell, "vanilla")
    assert max(_check(layer, cell).values()) <= EXACT


def test_flashrnn_weights_name_bad_input():
    w = _float64_weights("lstm")
    with pytest.raises(ValueError, match="cell"):
        frnn.flashrnn_weights("rnn_relu", *w.values())
    with pytest.raises(ValueError, match="weight_hh"):
        frnn.flashrnn_weights("gru", *w.values())  # LSTM weights: 4H rows, not 3H


# -------------------------------------------------------------------------------------- TorchRL


def _torchrl_contract(calls, cell):
    """A float64 function with TorchRL's ``lstm_triton`` / ``gru_triton`` contract: batch-first
    ``x (B, T, I)``, per-step reset states ``(B, T, H)`` whose step 0 is the initial state, reset
    mask ``is_init (B, T)``; nn's weights unchanged; LSTM returns ``(h_steps, c_steps, h_final,
    c_final)``, GRU ``(out, h_final)``. ``calls`` records the keyword arguments."""

    def lstm(x, hidden, c_steps, w_ih, w_hh, b_ih, b_hh, is_init, compute_dtype, **kwargs):
        calls.append({"compute_dtype": compute_dtype, **kwargs})
        assert x.shape[:2] == hidden.shape[:2] == is_init.shape and not is_init.any()
        h, c, hs, cs = hidden[:, 0], c_steps[:, 0], [], []
        for t in range(x.shape[1]):
            i, f, g, o = (F.linear(x[:, t], w_ih, b_ih) + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
            cs.append(c)
        return torch.stack(hs, 1), torch.stack(cs, 1), h, c

    def gru(x, hidden, w_ih, w_hh, b_ih, b_hh, is_init, compute_dtype, **kwargs):
        calls.append({"compute_dtype": compute_dtype, **kwargs})
        assert x.shape[:2] == hidden.shape[:2] == is_init.shape and not is_init.any()
        h, hs = hidden[:, 0], []
        for t in range(x.shape[1]):
            xr, xz, xn = F.linear(x[:, t], w_ih, b_ih).chunk(3, dim=-1)
            hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            h = z * h + (1 - z) * torch.tanh(xn + r * hn)
            hs.append(h)
        return torch.stack(hs, 1), h

    return lstm if cell == "lstm" else gru


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torchrl_adapter_moves_layouts_exactly_and_passes_the_precision(cell):
    from bench.peers import fp32_precision

    calls = []
    layer = trl.TorchRLLayer(_float64_weights(cell), "cpu", torch.float64, cell, _torchrl_contract(calls, cell))
    with fp32_precision("ieee"):
        errors = _check(layer, cell)
    assert max(errors.values()) <= EXACT, errors
    assert ("c_n" in errors) == (cell == "lstm")
    assert calls and all(c == {"compute_dtype": torch.float32, "input_precision": "ieee"} for c in calls)
    with fp32_precision("tf32"):
        layer(torch.zeros(T, B, I, dtype=torch.float64), _float64_state(cell))
    assert calls[-1]["input_precision"] == "tf32"


def _float64_state(cell):
    h0 = torch.zeros(1, B, H, dtype=torch.float64)
    return (h0, h0.clone()) if cell == "lstm" else h0


# ------------------------------------------------------------------------------------- compiled


def test_compiled_peer_is_the_naive_loop_compiled_whole_and_matches_float64_nn():
    """The compiled peer under aot_eager (the bench uses inductor): the naive layer's own class and
    parameters, dynamo traced it as one graph, and the float64 check passes."""
    from bench.peers import compiled
    from lstm_triton.charlm.naive import NaiveLSTM

    weights = reference_weights(I, H, 0, "lstm")
    layer = compiled.build(weights, "cpu", torch.float32, "lstm", compile_backend="aot_eager")
    assert isinstance(layer, NaiveLSTM)  # nn_layout_grads maps its gradients to torch.nn's names
    counters = torch._dynamo.utils.counters
    counters.clear()
    errors = _check(layer, "lstm", torch.float32)
    assert counters["stats"]["unique_graphs"] == 1  # the whole loop, no graph break (fullgraph=True)
    assert max(errors.values()) <= 1e-5, errors


# ---------------------------------------------------------------------------- status and profiles


def test_peers_say_why_they_cannot_run_here(monkeypatch):
    cpu = torch.device("cpu")
    assert status("compiled", cpu, torch.float32, "gru").available
    assert "not 'LSTM'" in status("compiled", cpu, torch.float32, "LSTM").reason  # cells are bench.cases.CELLS
    for provider in ("torchrl-triton", "flashrnn"):
        st = status(provider, cpu, torch.float32, "lstm")
        assert not st.available and not st.interpreted and "CUDA" in st.reason
    assert "LSTM and GRU" in status("torchrl-triton", cpu, torch.float32, "rnn").reason
    assert "relu" in status("flashrnn", cpu, torch.float32, "rnn_relu").reason
    assert "cuDNN" in trl.available("cuda", torch.float32, "lstm", trl.LayerConfig(bidirectional=True))
    assert "T=1024" in status("compiled", cpu, torch.float32, "lstm", seq_len=1024).reason  # the large shape
    assert status("compiled", cpu, torch.float32, "lstm", seq_len=35).available
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    for provider, package in (("torchrl-triton", "torchrl"), ("flashrnn", "flashrnn")):
        assert status(provider, torch.device("cuda"), torch.float32, "lstm").reason == \
            f"{package} is not installed (pip install lstm-triton[peers])"


def test_fp32_precision_sets_every_switch_and_restores_them():
    from bench.peers import fp32_precision, precision_label

    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.get_float32_matmul_precision())
    with fp32_precision("tf32"):
        assert torch.backends.cudnn.allow_tf32 and torch.get_float32_matmul_precision() == "high"
        assert precision_label(torch.float32, "cuda") == "fp32-tf32"
        assert precision_label(torch.float32, "cpu") == "fp32-ieee"  # no TF32 on a CPU
    with fp32_precision("ieee"):
        assert not torch.backends.cudnn.allow_tf32 and torch.get_float32_matmul_precision() == "highest"
        assert precision_label(torch.float32, "cuda") == "fp32-ieee"
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
            torch.get_float32_matmul_precision()) == saved
    assert precision_label(torch.bfloat16, "cuda") == "bf16"
    with pytest.raises(ValueError, match="mode"):
        fp32_precision("tf16").__enter__()


def test_profiles_place_the_peers():
    """make bench's cpu profile times the compiled LSTM at d2l forward+backward and lists the rest
    with reasons; the tiny profile (make test) leaves the compiled loop out; the char LM never
    trains a peer."""
    from bench.cases import PROFILES, e2e_cases, layer_cases
    from bench.providers import LAYER_PROVIDERS, PEER_PROVIDERS, PROVIDERS

    cpu, tiny, gpu = PROFILES["cpu"], PROFILES["tiny"], PROFILES["gpu"]
    peers = [c for c in layer_cases(cpu, LAYER_PROVIDERS, peers=PEER_PROVIDERS) if c.provider in PEER_PROVIDERS]
    assert {(c.shape.name, c.mode) for c in peers} == {("d2l", "forward_backward")}
    assert cpu.peer_skip("compiled", "lstm") is None and "LSTM only" in cpu.peer_skip("compiled", "gru")
    assert tiny.peer_skip("compiled", "lstm") and tiny.peer_skip("flashrnn", "lstm") is None
    gpu_peers = {(c.shape.name, c.mode) for c in layer_cases(gpu, LAYER_PROVIDERS, peers=PEER_PROVIDERS)
                 if c.provider == "flashrnn"}
    assert {s for s, _ in gpu_peers} == {"d2l", "large"} and len(gpu_peers) == 6  # no sweeps: each shape compiles
    assert not set(PEER_PROVIDERS) & {c.provider for c in e2e_cases(cpu, PROVIDERS)}


# --------------------------------------------------------------------------------------- report


def _case(provider, mode="forward_backward", interpreted=False, **extra):
    machine = {"device": "test CPU", "torch": "t", "triton": "tr", "cudnn": "n/a", "cuda": "n/a", "interpreter": True}
    return {"cell": "lstm", "provider": provider, "mode": mode, "shape": "d2l", "T": 35, "B": 32, "I": 28, "H": 256,
            "dtype": "fp32", "sweep_value": None, "tokens": 1120, "interpreted": interpreted, "max_rel_err": 2e-7,
            "tolerance": 1e-5, "machine": machine, "fusion": None, "precision": "fp32-ieee", **extra}


def test_report_has_precision_accuracy_first_call_robustness_and_skipped_peers(tmp_path):
    from bench.report import build_reports

    records = [
        (_case("nn", first_call_s=0.4, rel_err_x100=3e-7), 0.010),
        (_case("naive", first_call_s=0.2, rel_err_x100=5e-7), 0.040),
        (_case("compiled", backend="inductor", first_call_s=55.0, rel_err_x100=2e-5, max_rel_err=3e-7), 0.012),
        (_case("triton-step", fusion="step", interpreted=True, first_call_s=3.0, rel_err_x100=float("inf")), 2.0),
        (_case("nn", mode="forward"), 0.004),
    ]
    benchmarks = [{"extra_info": info, "stats": {"data": [sec] * 3, "median": sec, "q1": sec, "q3": sec}}
                  for info, sec in records]
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"datetime": "2025-01-01T00:00:00", "benchmarks": benchmarks,
                                "skipped_peers": {"lstm/flashrnn": "needs CUDA", "gru/flashrnn": "needs CUDA"}}))
    paths = build_reports(path, tmp_path / "out")
    csv = pd.read_csv(paths["csv"])
    lat = csv[csv["metric"] == "latency_ms"].set_index(["provider", "mode"])
    assert lat.loc[("compiled", "forward_backward"), "backend"] == "inductor"
    assert (lat["precision"] == "fp32-ieee").all()
    assert lat.loc[("compiled", "forward_backward"), "rel_err"] == pytest.approx(3e-7)
    assert lat.loc[("compiled", "forward_backward"), "first_call_s"] == pytest.approx(55.0)
    assert pd.isna(lat.loc[("nn", "forward"), "first_call_s"])
    assert set(csv[csv["metric"] == "first_call_s"]["provider"]) == {"nn", "naive", "compiled", "triton-step"}

    summary = paths["summary"].read_text()
    assert "| naive | nn | compiled (inductor) | largest relative error vs float64 (same order) |" in summary
    assert "| d2l | forward_backward | fp32 | 40 ms (0.25×) | 10 ms (1.00×) | 12 ms (0.83×) | " \
           "2.0e-07 / 2.0e-07 / 3.0e-07 |" in summary
    assert "Precision, set explicitly on every provider: fp32-ieee." in summary
    assert "Peers not run here: flashrnn — needs CUDA." in summary and "## GRU" not in summary
    first = summary.split("### First call")[1].split("###")[0]
    assert "| d2l | fp32 | 0.2 s | 0.4 s | 55 s |" in first and "triton-step" not in first  # interpreter: no timing
    robust = summary.split("### Robustness")[1]
    row = lambda p: next(x for x in robust.splitlines() if x.startswith(f"| d2l | {p}"))
    assert row("nn ").endswith("| ok |") and row("naive ").endswith("| ok |")
    assert row("compiled (inductor)").endswith("| beyond tolerance |")  # 2e-5 > 1e-5 and > 2 × nn's 3e-7
    assert "| NaN/inf | NaN/inf or error |" in row("triton-step (interpreter)")


def test_final_state_is_checked_too():
    """check_against_reference compares h_n/c_n: a layer whose final state is off fails on it alone."""
    from bench.providers import build_layer

    nn_layer = build_layer("nn", reference_weights(I, H, 0, "lstm"), "cpu", torch.float32)

    class WrongState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn_layer

        def forward(self, x, hx):
            out, (h, c) = self.inner(x, hx)
            return out, (h, c * 1.01)

    errors = check_against_reference(WrongState(), "forward", T, B, I, H, "cpu", torch.float32, 0, "lstm")
    assert errors["c_n"] > 1e-3 and errors["output"] <= 1e-5 and errors["h_n"] <= 1e-5
