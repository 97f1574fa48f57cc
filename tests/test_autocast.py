"""Autocast (issue 9, item 4): nn.LSTM's policy — input, states and weights (every floating tensor
but float64) are cast to the autocast dtype, results come out in it, and each gradient comes back
in its own tensor's dtype — whether backward runs inside or outside the region.

On the CPU, nn.LSTM runs bf16 autocast (fp16 is refused by its oneDNN kernel), so bf16 dtypes are
compared with nn.LSTM's and fp16 with the rule; values against float64 on the autocast-rounded
operands. On CUDA nn.LSTM's cuDNN rule casts to fp16 whatever the autocast dtype: the expected
dtype there is read from nn.LSTM itself. The interpreter runs bf16 at the cell level (item 6),
fp16 at every level.
"""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_triton

from .helpers import DEVICE, nn_lstm_runs_bf16_on_cpu, rel_err

LEVELS = ["cell", "step", "persistent"]
KIND = "cuda" if DEVICE == "cuda" else "cpu"
TOL = 1e-2  # bf16/fp16 against float64 (DESIGN.md, testing conventions)


NN_BF16 = KIND != "cpu" or nn_lstm_runs_bf16_on_cpu()


def _rule_dtypes(out: dict, grads: dict, leaves: dict, amp_dtype) -> tuple[dict, dict]:
    """nn.LSTM's autocast rule (module docstring) where nn cannot run: results in the autocast dtype,
    each gradient in its own tensor's dtype."""
    return {k: amp_dtype for k in out}, {k: leaves[k].dtype for k in grads}


def _run(layer, x, h0, c0, amp_dtype, backward_inside):
    """Forward under autocast; backward of a random projection inside or outside the region."""
    w = torch.randn(x.shape[:-1] + (layer.hidden_size,), generator=torch.Generator().manual_seed(5))
    with torch.autocast(KIND, dtype=amp_dtype):
        y, (h, c) = layer(x, (h0, c0))
        if backward_inside:
            ((y.float() * w.to(y.device)).sum() + c.float().sum()).backward()
    if not backward_inside:
        ((y.float() * w.to(y.device)).sum() + c.float().sum()).backward()
    grads = {"x": x.grad, "h0": h0.grad, **{n: p.grad for n, p in layer.named_parameters()}}
    return {"y": y, "h_n": h, "c_n": c}, grads


def _inputs(x_dtype, device):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, 2, 3, generator=gen).to(device, x_dtype).requires_grad_()
    h0 = torch.randn(1, 2, 5, generator=gen).to(device).requires_grad_()
    c0 = torch.randn(1, 2, 5, generator=gen).to(device)
    return x, h0, c0


@pytest.mark.parametrize("fusion", LEVELS)
@pytest.mark.parametrize("backward_inside", [True, False], ids=["backward-inside", "backward-outside"])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16], ids=["fp32-input", "bf16-input"])
def test_bf16_autocast_gives_nn_lstm_dtypes(fusion, backward_inside, x_dtype):
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5).to(DEVICE)
    ours = lstm_triton.LSTM(3, 5, fusion=fusion, backend="triton", device=DEVICE)
    ours.load_state_dict(ref.state_dict())
    out, grads = _run(ours, *_inputs(x_dtype, DEVICE), torch.bfloat16, backward_inside)
    if NN_BF16:
        ref_out, ref_grads = _run(ref, *_inputs(x_dtype, DEVICE), torch.bfloat16, backward_inside)
        want = {k: v.dtype for k, v in ref_out.items()}, {k: v.dtype for k, v in ref_grads.items()}
    else:
        x, h0, _ = _inputs(x_dtype, DEVICE)
        want = _rule_dtypes(out, grads, {"x": x, "h0": h0, **dict(ours.named_parameters())}, torch.bfloat16)
    assert {k: v.dtype for k, v in out.items()} == want[0]
    assert {k: v.dtype for k, v in grads.items()} == want[1]


def _float64_reference(layer, x, h0, c0, amp_dtype):
    """nn.LSTM in float64 on the operands rounded to ``amp_dtype`` (what autocast feeds the kernels)."""
    ref = nn.LSTM(layer.input_size, layer.hidden_size, dtype=torch.float64)
    ref.load_state_dict({k: v.to(amp_dtype).double() for k, v in layer.state_dict().items()})
    x, h0, c0 = (t.detach().to(amp_dtype).double().cpu().requires_grad_() for t in (x, h0, c0))
    return ref, x, h0, c0


def _nn_lstm_cast_dtype(amp_dtype):
    """The dtype nn.LSTM computes in under autocast(amp_dtype) here."""
    if KIND == "cpu":
        return amp_dtype  # the autocast dtype (its fp16 oneDNN kernel then refuses to run)
    with torch.autocast(KIND, dtype=amp_dtype):
        return nn.LSTM(3, 5).to(DEVICE)(torch.randn(4, 2, 3, device=DEVICE))[0].dtype


@pytest.mark.parametrize("fusion", LEVELS)
@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_values_and_gradients(fusion, amp_dtype):
    torch.manual_seed(0)
    ours = lstm_triton.LSTM(3, 5, fusion=fusion, backend="triton", device=DEVICE)
    x, h0, c0 = _inputs(torch.float32, DEVICE)
    out, grads = _run(ours, x, h0, c0, amp_dtype, backward_inside=False)
    cast_dtype = _nn_lstm_cast_dtype(amp_dtype)
    assert all(v.dtype == cast_dtype for v in out.values())
    assert all(g.dtype == torch.float32 for g in grads.values())  # fp32 leaves get fp32 gradients
    ref, *args = _float64_reference(ours, x, h0, c0, cast_dtype)
    y, (h, c) = ref(args[0], (args[1], args[2]))
    w = torch.randn(4, 2, 5, generator=torch.Generator().manual_seed(5)).double()  # as in _run
    ((y * w).sum() + c.sum()).backward()
    expected = {"y": y, "h_n": h, "c_n": c}
    errors = {k: rel_err(out[k], expected[k]) for k in expected}
    errors["x"], errors["h0"] = rel_err(grads["x"], args[0].grad), rel_err(grads["h0"], args[1].grad)
    errors.update({n: rel_err(grads[n], p.grad) for n, p in ref.named_parameters()})
    assert max(errors.values()) <= TOL, errors


def test_functional_lstm_under_autocast():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(4, 2, 3, generator=gen).to(DEVICE).requires_grad_()
    w_ih, w_hh, b = (torch.randn(s, generator=gen).to(DEVICE).requires_grad_() for s in ((20, 3), (20, 5), (20,)))
    with torch.autocast(KIND, dtype=torch.bfloat16):
        y, (h, c) = lstm_triton.lstm(x, w_ih, w_hh, b, b, backend="triton", fusion="step")
    assert (y.dtype, h.dtype, c.dtype) == (_nn_lstm_cast_dtype(torch.bfloat16),) * 3
    (y.float().sum() + c.float().sum()).backward()
    assert all(t.grad.dtype == torch.float32 and t.grad.abs().sum() > 0 for t in (x, w_ih, w_hh, b))


def test_float64_is_not_cast_by_autocast():
    """Autocast leaves float64 alone (nn.LSTM too); backend='auto' then runs it on torch's kernel."""
    layer = lstm_triton.LSTM(3, 5, dtype=torch.float64, device=DEVICE)
    with torch.autocast(KIND, dtype=torch.bfloat16):
        y, (h, c) = layer(torch.randn(4, 2, 3, dtype=torch.float64, device=DEVICE))
    assert (y.dtype, h.dtype, c.dtype) == (torch.float64,) * 3


FLOATS = [torch.float32, torch.bfloat16, torch.float16]
# (autocast dtype, weights, input, state): state None is nn's zeros; the LSTM's h0 and c0 share it.
# Every input and state dtype under bf16 autocast, and fp16 autocast on an fp16 input (nn.LSTM's
# oneDNN kernel refuses fp16 otherwise); fp16 weights take the same casts as bf16 ones.
CPU_AUTOCAST_MIXES = [(torch.bfloat16, w, x, s) for w in FLOATS[:2] for x in FLOATS for s in FLOATS + [None]] + [
    (torch.float16, torch.float32, torch.float16, s) for s in FLOATS + [None]]
# layer -> (nn class, constructor kwargs, packed input); packed runs the fp32-weight mixes
CPU_AUTOCAST_LAYERS = {"LSTM": (nn.LSTM, {}, False), "LSTM-proj": (nn.LSTM, {"proj_size": 4}, False),
                       "GRU": (nn.GRU, {}, False), "RNN": (nn.RNN, {}, False), "LSTM-packed": (nn.LSTM, {}, True),
                       "GRU-packed": (nn.GRU, {}, True), "RNN-packed": (nn.RNN, {}, True)}
PACKED_LENGTHS = [3, 5]  # unsorted


def _call(layer, x, states, packed):
    """``(output (padded), *final states)`` of ``layer`` on time-major ``x``, packed or not."""
    hx = None if states is None else states if len(states) == 2 else states[0]
    y, final = layer(pack_padded_sequence(x, PACKED_LENGTHS, enforce_sorted=False) if packed else x, hx)
    y = pad_packed_sequence(y)[0] if packed else y
    return (y, *final) if isinstance(final, tuple) else (y, final)


def _forward_backward(layer, x, states, amp_dtype, packed):
    """Results and gradient dtypes under CPU autocast (backward of the float32 sums)."""
    x = x.clone().requires_grad_()
    states = None if states is None else tuple(s.clone().requires_grad_() for s in states)
    with torch.autocast("cpu", dtype=amp_dtype):
        results = _call(layer, x, states, packed)
    sum(r.float().sum() for r in results).backward()
    leaves = [x, *(states or ()), *layer.parameters()]
    return results, [t.grad.dtype for t in leaves]


@pytest.mark.skipif(KIND != "cpu", reason="CPU autocast rules (CUDA's cuDNN rule is float16 for every class)")
@pytest.mark.parametrize("layer", CPU_AUTOCAST_LAYERS, ids=CPU_AUTOCAST_LAYERS)
def test_cpu_autocast_takes_every_dtype_mix_nn_takes(layer):
    """CPU autocast leaves nn.GRU, and nn.LSTM with proj_size, an fp16 input or packed input, to
    their own code, where only the linears are cast: they then run any mix of weight, input and
    state dtypes (a bf16 input from an autocast Linear into an fp32 layer), and the state comes out
    in promote_types(last state's dtype, autocast dtype) (rnn_base.autocast_dtype). For every mix
    nn runs, ours gives the same result and gradient dtypes, and values within bf16's tolerance of
    float64 or no worse than nn's own."""
    nn_class, kwargs, packed = CPU_AUTOCAST_LAYERS[layer]
    torch.manual_seed(0)
    ref64 = nn_class(3, 6, dtype=torch.float64, **kwargs)
    ours = getattr(lstm_triton, nn_class.__name__)(3, 6, fusion="persistent", backend="triton", **kwargs)
    ours.load_state_dict(ref64.state_dict())
    gen = torch.Generator().manual_seed(1)
    x32 = torch.randn(5, 2, 3, generator=gen)
    sizes = [ref64.get_expected_hidden_size(x32, None)] + (
        [ref64.get_expected_cell_size(x32, None)] if nn_class is nn.LSTM else [])
    s32 = [torch.randn(size, generator=gen) for size in sizes]
    mixes = [m for m in CPU_AUTOCAST_MIXES if not packed or m[1] == torch.float32]
    compared = 0
    for amp_dtype, wd, xd, sd in mixes:
        mix = f"autocast {amp_dtype}, weights {wd}, input {xd}, states {sd}"
        x, states = x32.to(xd), None if sd is None else tuple(s.to(sd) for s in s32)
        # Dense nn.LSTM without a projection and with a bf16/fp32 input is autocast's: cast to the
        # autocast dtype for oneDNN's kernel. Where that kernel has no bf16 (no AVX-512/AMX) nn
        # refuses some mixes and runs others in fp32: compare with the rule (as on AVX-512 CPUs
        # and cuDNN) and float64 instead.
        if layer == "LSTM" and xd != torch.float16 and amp_dtype == torch.bfloat16 and not NN_BF16:
            want = None
        else:
            try:
                want, want_grads = _forward_backward(copy.deepcopy(ref64).to(wd), x, states, amp_dtype, packed)
            except RuntimeError:  # nn has no kernel for this mix (oneDNN's fp16 LSTM, packed fp16 casts)
                continue
        got, got_grads = _forward_backward(copy.deepcopy(ours).to(wd), x, states, amp_dtype, packed)
        if want is None:
            leaves = [x, *(states or ()), *copy.deepcopy(ours).to(wd).parameters()]
            assert [t.dtype for t in got] == [amp_dtype] * len(got), mix
            assert got_grads == [t.dtype for t in leaves], mix
        else:
            assert [t.dtype for t in got] == [t.dtype for t in want] and got_grads == want_grads, mix
        with torch.no_grad():  # the exact result of the same (rounded) numbers
            exact = _call(copy.deepcopy(ref64).to(wd).double(), x.double(),
                          None if states is None else tuple(s.double() for s in states), packed)
        errors = [(rel_err(a, e), rel_err(n, e) if want is not None else TOL) for a, n, e in
                  zip(got, want if want is not None else got, exact)]
        assert all(e <= TOL or e <= nn_e for e, nn_e in errors), f"{mix}: {errors}"
        compared += 1
    assert compared >= len(mixes) - 8, compared


@pytest.mark.skipif(KIND != "cpu", reason="CPU autocast rules")
@pytest.mark.parametrize("layer", ["LSTM", "LSTM-proj", "GRU", "RNN"])
def test_cpu_autocast_with_lengths_agrees_across_backends(layer):
    """``lengths`` under autocast, a row of length 0 included: backend='torch' (nn's packed path,
    the 0-length row's state as given) and the kernels give the same dtypes, and values within
    bf16's tolerance of float64 (or no worse than torch's)."""
    nn_class, kwargs, _ = CPU_AUTOCAST_LAYERS[layer]
    torch.manual_seed(0)
    name = nn_class.__name__
    exact_layer = getattr(lstm_triton, name)(3, 6, backend="torch", dtype=torch.float64, **kwargs)
    x = torch.randn(5, 3, 3, generator=torch.Generator().manual_seed(1))
    results = {}
    for backend in ("torch", "triton"):
        layer_ = getattr(lstm_triton, name)(3, 6, backend=backend, fusion="step", **kwargs)
        layer_.load_state_dict(exact_layer.state_dict())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, final = layer_(x, lengths=[5, 2, 0])
        results[backend] = (y, *final) if isinstance(final, tuple) else (y, final)
    y, final = exact_layer(x.double(), lengths=[5, 2, 0])
    exact = (y, *final) if isinstance(final, tuple) else (y, final)
    assert [t.dtype for t in results["triton"]] == [t.dtype for t in results["torch"]]
    errors = [(rel_err(a, e), rel_err(t, e)) for a, t, e in zip(results["triton"], results["torch"], exact)]
    assert all(e <= TOL or e <= t_e for e, t_e in errors), errors
