"""lstm_triton.GRU / lstm_triton.RNN (tanh, relu) against nn.GRU / nn.RNN in float64: output, h_n
and every gradient, with every kernel output NaN-poisoned, at the cell, step and persistent levels
(the persistent level with the GPU's tiles runs its programs concurrently under the multi-program
harness, as the LSTM's tests do; ``auto`` picks persistent when it fits, else step, logged).
"""

import contextlib
import copy
import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_triton
from lstm_triton.kernels.buffers import set_poison

from .helpers import DEVICE, MODULE_VARIANTS, TOL, assert_close, compare_with_nn, rel_err
from .multiprogram import concurrent_programs

CELLS = ["GRU", "RNN_TANH", "RNN_RELU"]
LEVELS = ["cell", "step", "persistent"]


pytestmark = pytest.mark.usefixtures("poisoned")  # every kernel output starts as NaN


SHAPES = {
    "odd-B3-T7-I5-H20": (7, 3, 5, 20),
    "T1": (1, 3, 5, 20),
    "B1": (6, 1, 5, 20),
    "H40-across-tiles": (5, 4, 7, 40),
}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("fusion", LEVELS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_single_layer_matches_nn(fusion, cell, shape, tiles):
    # GPU tiles give the persistent level several programs (H=20: 2, H=40: 3) meeting at its
    # barrier: under the interpreter the harness runs them as co-resident threads (a no-op on CUDA).
    several = fusion == "persistent" and tiles == "gpu-tiles"
    with concurrent_programs(seed=0) if several else contextlib.nullcontext():
        assert_close(compare_with_nn(fusion, *shape, cell=cell))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("fusion", ["auto", "persistent"])
def test_auto_and_persistent_run_persistent_and_say_why(cell, fusion, caplog):
    with caplog.at_level(logging.DEBUG, logger="lstm_triton"):
        errors = compare_with_nn(fusion, 4, 3, 5, 20, cell=cell)
    assert f"fusion {fusion} -> persistent: {cell} B=3 H=20" in caplog.text
    assert_close(errors)


@pytest.mark.skipif(DEVICE != "cpu", reason="the interpreter's one-tile limit")
@pytest.mark.parametrize("cell", CELLS)
def test_persistent_falls_back_to_step_when_it_cannot_hold_the_shape(cell, caplog):
    """More rows than the interpreter's one persistent program holds: the step level runs it, and
    the log says why (the GPU's rule, the same for every cell type, is in test_launch_config)."""
    with caplog.at_level(logging.DEBUG, logger="lstm_triton"):
        errors = compare_with_nn("persistent", 2, 65, 3, 6, cell=cell)
    assert f"fusion persistent -> step: {cell} B=65 H=6" in caplog.text and "B=65 > 64" in caplog.text
    assert_close(errors)


@pytest.mark.skipif(DEVICE != "cpu", reason="the interpreter's bf16 rule")
def test_bf16_under_the_interpreter_runs_at_cell(caplog):
    """bf16 (8 significant bits) through a GRU lands around 1e-2 against float64 — nn.GRU's own
    bf16 does too — so each error must be ≤ 1e-2 or no worse than nn.GRU's in bf16 on the same data."""
    with caplog.at_level(logging.DEBUG, logger="lstm_triton"):
        errors = compare_with_nn("step", 4, 3, 5, 20, cell="GRU", dtype=torch.bfloat16)
    assert "fusion step -> cell: bf16 under the Triton interpreter" in caplog.text
    baseline = compare_with_nn("step", 4, 3, 5, 20, cell="GRU", dtype=torch.bfloat16, layer_class=nn.GRU)
    bad = {k: (v, baseline[k]) for k, v in errors.items() if not (v <= TOL[torch.bfloat16] or v <= baseline[k])}
    assert not bad, f"(ours, nn.GRU bf16) relative errors vs float64: {bad}"


# The module features (layers, directions, batch_first, states, dropout, ...) are the shared layer
# code (rnn_base.py) the LSTM runs at every level in test_lstm_triton.py; each level's GRU/RNN
# kernels are test_single_layer_matches_nn's. Here they meet at the persistent level, the one auto
# picks on a GPU at these sizes (cell and step here too cost make test 19 CPU-s more).
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("fusion", ["persistent"])
@pytest.mark.parametrize("variant", MODULE_VARIANTS.values(), ids=MODULE_VARIANTS.keys())
def test_module_features_match_nn(fusion, cell, variant):
    assert_close(compare_with_nn(fusion, 5, 3, 4, 12, cell=cell, **variant))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("fusion", LEVELS)
def test_fp16_inputs_with_fp32_state(fusion, cell):
    assert_close(compare_with_nn(fusion, 7, 3, 5, 20, dtype=torch.float16, cell=cell), torch.float16)


@settings(max_examples=10, deadline=None)
@given(fusion=st.sampled_from(LEVELS), cell=st.sampled_from(CELLS), T=st.integers(1, 5), B=st.integers(1, 4),
       I=st.integers(1, 6), H=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_random_shapes_match_nn(fusion, cell, T, B, I, H, seed):
    """≤ 1e-5, or for a rare tiny draw where fp32 itself cannot reach that against float64, no
    worse than twice nn's own fp32 error (as the LSTM's hypothesis test)."""
    set_poison(True)
    errors = compare_with_nn(fusion, T, B, I, H, seed=seed, cell=cell)
    over = {k: v for k, v in errors.items() if not v <= TOL[torch.float32]}
    if over:
        ref_class = nn.GRU if cell == "GRU" else nn.RNN
        baseline = compare_with_nn(fusion, T, B, I, H, seed=seed, cell=cell, layer_class=ref_class)
        bad = {k: (v, baseline[k]) for k, v in over.items() if not v <= 2 * baseline[k]}
        assert not bad, f"(ours, nn fp32) relative errors vs float64 above 1e-5 and above 2x nn's: {bad}"


def _layer_pair(cell, I=4, H=10, fusion="auto", **kwargs):
    gen = torch.Generator().manual_seed(0)
    ref_class, name, extra = {"GRU": (nn.GRU, "GRU", {}), "RNN_TANH": (nn.RNN, "RNN", {}),
                              "RNN_RELU": (nn.RNN, "RNN", {"nonlinearity": "relu"})}[cell]
    ref = ref_class(I, H, dtype=torch.float64, **extra, **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    ours = getattr(lstm_triton, name)(I, H, backend="triton", device=DEVICE, fusion=fusion, **extra, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("fusion", LEVELS)
def test_packed_sequence_matches_nn(fusion, cell, caplog):
    """Unsorted lengths incl. a full and a length-1 row, bidirectional, on the kernels at every level
    (no fallback to torch's kernel is logged)."""
    errors = compare_packed_rnn(cell, fusion, [3, 6, 1, 4], caplog, bidirectional=True)
    if fusion == "persistent":
        assert f"fusion persistent -> persistent: {cell}" in caplog.text
    assert_close(errors)


@pytest.mark.parametrize("seed", [3])
def test_packed_gru_on_the_persistent_level_with_several_programs(seed, caplog):
    """The GPU's tiles under the multi-program harness: H=40 -> 3 programs meeting at the barrier,
    unsorted lengths from 1 to T (rows frozen by z = 1 while the others run on)."""
    from lstm_triton.kernels.launch_config import use_gpu_tiles

    use_gpu_tiles(True)
    try:
        with concurrent_programs(seed) as harness:
            errors = compare_packed_rnn("GRU", "persistent", [2, 5, 1, 4, 3], caplog, H=40)
    finally:
        use_gpu_tiles(False)
    assert "fusion persistent -> persistent: GRU B=5 H=40" in caplog.text
    if harness.active:
        ran = [(launch.programs, launch.programs_finished) for launch in harness.launches
               if launch.kernel.startswith("persistent")]
        assert ran == [(3, 3), (3, 3)], ran  # forward and backward, every program to its end
    assert_close(errors)


def compare_packed_rnn(cell, fusion, lengths, caplog, H=10, **kwargs):
    """A PackedSequence of ``lengths`` through ours and float64 nn: {name: relative error} of the
    output, h_n and every gradient (input and each parameter)."""
    ref, ours = _layer_pair(cell, H=H, fusion=fusion, **kwargs)
    x = torch.randn(max(lengths), len(lengths), 4, dtype=torch.float64)
    lengths = torch.tensor(lengths)
    x64 = x.clone().requires_grad_()
    x32 = x.float().to(DEVICE).requires_grad_()
    out64, h64 = ref(pack_padded_sequence(x64, lengths, enforce_sorted=False))
    with caplog.at_level(logging.DEBUG, logger="lstm_triton"):
        out32, h32 = ours(pack_padded_sequence(x32, lengths, enforce_sorted=False))
    assert torch.equal(out32.batch_sizes, out64.batch_sizes)
    assert "torch's kernel" not in caplog.text
    y64, y32 = pad_packed_sequence(out64)[0], pad_packed_sequence(out32)[0]
    upstream = torch.randn(y64.shape, dtype=torch.float64), torch.randn(h64.shape, dtype=torch.float64)
    ((y64 * upstream[0]).sum() + (h64 * upstream[1]).sum()).backward()
    ((y32 * upstream[0].float()).sum() + (h32 * upstream[1].float()).sum()).backward()
    errors = {"output": rel_err(y32, y64), "h_n": rel_err(h32, h64), "d_input": rel_err(x32.grad, x64.grad)}
    errors.update({f"d_{n}": rel_err(p.grad, q.grad) for (n, p), q in zip(ours.named_parameters(), ref.parameters())})
    return errors


@pytest.mark.parametrize("cell", ["GRU", "RNN_RELU"])
def test_functional_form_matches_the_module(cell):
    ref, _ = _layer_pair(cell)
    x, h0 = torch.randn(5, 3, 4, dtype=torch.float64), torch.randn(3, 10, dtype=torch.float64)
    params = [p.detach().float().to(DEVICE) for p in ref.parameters()]
    if cell == "GRU":
        y, h = lstm_triton.gru(x.float().to(DEVICE), *params, hx=h0.float().to(DEVICE), backend="triton")
    else:
        y, h = lstm_triton.rnn(x.float().to(DEVICE), *params, hx=h0.float().to(DEVICE), nonlinearity="relu",
                               backend="triton")
    ry, rh = ref(x, h0[None])
    assert rel_err(y, ry) <= 1e-5 and rel_err(h, rh[0]) <= 1e-5


@pytest.mark.parametrize("cell", CELLS)
def test_functional_lengths_freeze_rows_as_packing_does(cell):
    """``lengths`` with a 0-length row: output 0 past each length, h_n each row's own last state
    (h0 for length 0), against torch's kernel on the same call."""
    ref, _ = _layer_pair(cell)
    fn = lstm_triton.gru if cell == "GRU" else lstm_triton.rnn
    extra = {} if cell == "GRU" else {"nonlinearity": "relu" if cell == "RNN_RELU" else "tanh"}
    x, h0 = torch.randn(5, 3, 4), torch.randn(3, 10)
    params = [p.detach().float() for p in ref.parameters()]
    lengths = torch.tensor([5, 0, 2])
    ours = fn(x.to(DEVICE), *(p.to(DEVICE) for p in params), hx=h0.to(DEVICE), lengths=lengths, backend="triton",
              **extra)
    torch_ = fn(x, *params, hx=h0, lengths=lengths, backend="torch", **extra)
    assert rel_err(ours[0], torch_[0]) <= 1e-5 and rel_err(ours[1], torch_[1]) <= 1e-5
    assert torch.equal(ours[1][1].cpu(), h0[1]) and not ours[0][2:, 2].any()


@pytest.mark.parametrize("cell", CELLS)
def test_gradient_of_a_gradient_matches_nn(cell):
    """create_graph=True runs the differentiable torch backward: a gradient penalty's weight grads."""
    ref, ours = _layer_pair(cell)
    x64 = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)
    x32 = x64.detach().float().to(DEVICE).requires_grad_()
    for model, x in ((ref, x64), (ours, x32)):
        y, h = model(x)
        (g,) = torch.autograd.grad((y ** 2).sum() + h.sum(), x, create_graph=True)
        (g ** 2).sum().backward()
    errors = {n: rel_err(p.grad, q.grad) for (n, p), q in zip(ours.named_parameters(), ref.parameters())}
    assert_close(errors)


def test_errors_match_nn():
    ours, ref = lstm_triton.RNN(3, 5, backend="triton"), nn.RNN(3, 5)
    for model in (ours, ref):
        with pytest.raises(ValueError, match="RNN: Expected input to be 2D or 3D, got 4D tensor instead"):
            model(torch.randn(1, 1, 1, 3))
        with pytest.raises(RuntimeError, match="For batched 3-D input, hx should also be 3-D but got 2-D tensor"):
            model(torch.randn(2, 1, 3), torch.randn(1, 5))
    with pytest.raises(ValueError, match="GRU: Expected input to be 2D or 3D, got 1D instead"):
        lstm_triton.GRU(3, 5, backend="triton")(torch.randn(3))
    with pytest.raises(ValueError, match="fusion must be one of"):
        lstm_triton.GRU(3, 5, fusion="warp")
    layer = lstm_triton.GRU(3, 5, backend="triton")
    layer.fusion = "warp"  # after construction: checked at the call, under its own name
    with pytest.raises(ValueError, match="^fusion must be one of auto, cell, step, persistent, got 'warp'$"):
        layer(torch.randn(2, 1, 3))
    with pytest.raises(ValueError, match="nonlinearity must be one of tanh, relu"):
        lstm_triton.rnn(torch.randn(2, 1, 3), torch.randn(5, 3), torch.randn(5, 5), nonlinearity="gelu")
    with pytest.raises(RuntimeError, match=r"gru: weight_ih must be \(3H, I\)"):
        lstm_triton.gru(torch.randn(2, 1, 3), torch.randn(12, 3), torch.randn(5, 5))
    with pytest.raises(ValueError, match="mode must be one of GRU, RNN_TANH, RNN_RELU"):
        torch.ops.lstm_triton.rnn_recurrence(torch.randn(2, 1, 4), torch.randn(1, 4), torch.randn(4, 4), None,
                                             "LSTM", "cell")


def test_modules_are_drop_ins():
    gru, rnn = lstm_triton.GRU(3, 5, num_layers=2), lstm_triton.RNN(3, 5, nonlinearity="relu", bias=False)
    assert isinstance(gru, nn.GRU) and isinstance(rnn, nn.RNN) and rnn.nonlinearity == "relu"
    assert list(gru.state_dict()) == list(nn.GRU(3, 5, num_layers=2).state_dict())
    assert "fusion='auto', backend='auto'" in repr(rnn)


def test_compiles_in_one_graph_and_exports():
    """The recurrence is an operator with a fake implementation: torch.compile(fullgraph=True)
    traces the GRU, and torch.export captures the RNN with the operator in its graph."""
    torch.manual_seed(0)
    gru = lstm_triton.GRU(4, 8, backend="triton", device=DEVICE)
    x = torch.randn(5, 2, 4, device=DEVICE)
    y, h = torch.compile(gru, backend="aot_eager", fullgraph=True)(x)
    ey, eh = gru(x)
    assert torch.equal(y, ey) and torch.equal(h, eh)
    program = torch.export.export(lstm_triton.RNN(4, 8, backend="triton", device=DEVICE), (x,))
    assert "lstm_triton.rnn_recurrence" in str(program.graph)


@pytest.mark.parametrize("cell", CELLS)
def test_empty_batch_gives_empty_results_and_zero_grads(cell):
    ref, ours = _layer_pair(cell)
    x = torch.randn(3, 0, 4, device=DEVICE, requires_grad=True)
    y, h = ours(x)
    ry, rh = ref(torch.randn(3, 0, 4, dtype=torch.float64))
    assert y.shape == ry.shape and h.shape == rh.shape
    (y.sum() + h.sum()).backward()
    assert x.grad.shape == x.shape and not ours.weight_hh_l0.grad.any()


@pytest.mark.skipif(DEVICE != "cpu", reason="CPU autocast rules (CUDA's cuDNN rule is float16 for every class)")
@pytest.mark.parametrize("cell", CELLS)
def test_autocast_gives_nn_result_dtype(cell):
    """CPU autocast casts nn.RNN to bf16 but leaves nn.GRU's result in float32 (gru is not on ATen's
    CPU list; its inner GEMMs still run in bf16, ours run in fp32): the same result dtypes, and
    values against float64: each within bf16's tolerance or no worse than nn's own autocast result
    (two bf16 results can each be ~1e-2 off float64, so they are not compared with each other)."""
    ref64, ours = _layer_pair(cell)
    x = torch.randn(4, 2, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        exact = ref64(x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ours(x)
        nn_got = copy.deepcopy(ref64).float()(x)
    assert [t.dtype for t in got] == [t.dtype for t in nn_got]
    errors = [(rel_err(a, e), rel_err(n, e)) for a, n, e in zip(got, nn_got, exact)]
    assert all(e <= TOL[torch.bfloat16] or e <= nn_e for e, nn_e in errors), f"(ours, nn) vs float64: {errors}"


@pytest.mark.parametrize("cell", ["GRU", "RNN_TANH"])
def test_torch_func_grad_matches_nn(cell):
    from torch.func import functional_call, grad

    ref, ours = _layer_pair(cell)
    x64 = torch.randn(4, 2, 4, dtype=torch.float64)

    def loss(model, x):
        return lambda params: functional_call(model, params, (x,))[0].pow(2).sum()

    ours_grads = grad(loss(ours, x64.float().to(DEVICE)))({k: v.detach() for k, v in ours.named_parameters()})
    ref_grads = grad(loss(ref, x64))({k: v.detach() for k, v in ref.named_parameters()})
    assert_close({k: rel_err(ours_grads[k], ref_grads[k]) for k in ref_grads})
