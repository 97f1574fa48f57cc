"""Variable-length input on the Triton kernels against float64 nn.LSTM on the packed equivalent.

PackedSequence input (sorted or not, bidirectional, several layers, hx given or not) and padded
input with ``lengths`` (module and functional): output, h_n, c_n and every gradient within 1e-5
relative, outputs NaN-poisoned before the kernels write them.
"""

import re

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_triton
from lstm_triton.kernels.buffers import set_poison

from .helpers import DEVICE, rel_err

LEVELS = ["cell", "step", "persistent"]
TOL = 1e-5


@pytest.fixture(autouse=True)
def poison_outputs():
    set_poison(True)
    yield
    set_poison(False)


def _pair(I, H, *, seed, **kwargs):
    gen = torch.Generator().manual_seed(seed)
    ref = nn.LSTM(I, H, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    return ref, gen


def _ours(fusion, I, H, ref, **kwargs):
    ours = lstm_triton.LSTM(I, H, fusion=fusion, backend="triton", device=DEVICE, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ours


def _grads_and_errors(ref, ours, leaves64, leaves, expected, actual, gen):
    upstream = [torch.randn(e.shape, generator=gen, dtype=torch.float64) for e in expected]
    sum((e * u).sum() for e, u in zip(expected, upstream)).backward()
    sum((a.double() * u.to(a.device)).sum() for a, u in zip(actual, upstream)).backward()
    errors = {name: rel_err(a, e) for name, a, e in zip(("output", "h_n", "c_n"), actual, expected)}
    for i, (a, e) in enumerate(zip(leaves, leaves64)):
        errors[f"d_leaf{i}"] = rel_err(a.grad, e.grad)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        errors[f"d_{name}"] = rel_err(p.grad, q.grad)
    return errors


def _assert_close(errors):
    bad = {k: v for k, v in errors.items() if not v <= TOL}
    assert not bad, f"relative errors above {TOL}: {bad}"


CASES = {
    "lengths-1-and-T": dict(lengths=[5, 1, 3], enforce_sorted=False),
    "sorted": dict(lengths=[5, 4, 1], enforce_sorted=True),
    "all-equal": dict(lengths=[4, 4, 4], enforce_sorted=True),
    "batch-of-1": dict(lengths=[3], enforce_sorted=True),
    "bidirectional-unsorted": dict(lengths=[2, 5, 4], enforce_sorted=False, bidirectional=True),
    "2-layers-bi": dict(lengths=[3, 5, 1, 4], enforce_sorted=False, bidirectional=True, num_layers=2),
    "no-hx": dict(lengths=[2, 5, 4], enforce_sorted=False, with_state=False),
}


def compare_packed(fusion, lengths, enforce_sorted=False, with_state=True, I=3, H=6, seed=0, train=False, **kwargs):
    """PackedSequence through ours and float64 nn.LSTM: {name: relative error} of the output data,
    h_n, c_n and every gradient; also checks batch_sizes and the (un)sorted indices."""
    T, B = max(lengths), len(lengths)
    ref, gen = _pair(I, H, seed=seed, **kwargs)
    ours = _ours(fusion, I, H, ref, **kwargs)
    ref.train(train)
    ours.train(train)
    D = 2 if kwargs.get("bidirectional") else 1
    L = kwargs.get("num_layers", 1)
    leaves64 = [torch.randn(T, B, I, generator=gen, dtype=torch.float64)]
    if with_state:
        leaves64 += [torch.randn(L * D, B, H, generator=gen, dtype=torch.float64) for _ in range(2)]
    leaves64 = [t.requires_grad_() for t in leaves64]
    leaves = [t.detach().to(DEVICE, torch.float32).requires_grad_() for t in leaves64]

    def run(model, xs):
        packed = pack_padded_sequence(xs[0], torch.tensor(lengths), enforce_sorted=enforce_sorted)
        out, (h, c) = model(packed, (xs[1], xs[2]) if with_state else None)
        assert torch.equal(out.batch_sizes, packed.batch_sizes)
        return out.data, h, c, out

    *expected, ref_out = run(ref, leaves64)
    *actual, our_out = run(ours, leaves)
    for name in ("sorted_indices", "unsorted_indices"):
        a, e = getattr(our_out, name), getattr(ref_out, name)
        assert (a is None and e is None) or torch.equal(a.cpu(), e), name
    return _grads_and_errors(ref, ours, leaves64, leaves, expected, actual, gen)


@pytest.mark.parametrize("fusion", LEVELS)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_packed_sequence_matches_nn_lstm(fusion, case):
    _assert_close(compare_packed(fusion, **case))


def test_packed_layers_with_dropout_in_training():
    """Two layers, dropout p=1 between them in training mode: layer 2 sees zeros in both."""
    _assert_close(compare_packed("step", [3, 1, 2], num_layers=2, dropout=1.0, train=True))


@pytest.mark.parametrize("fusion", LEVELS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_padded_input_with_lengths_matches_nn_lstm_packed(fusion, bidirectional):
    """Module form: ``forward(input, hx, lengths=...)``; zeros past each length, state frozen there,
    gradients through the padding zero."""
    lengths = [4, 1, 3]
    I, H, T, B = 3, 5, 4, 3
    ref, gen = _pair(I, H, seed=1, bidirectional=bidirectional)
    ours = _ours(fusion, I, H, ref, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    leaves64 = [torch.randn(T, B, I, generator=gen, dtype=torch.float64)]
    leaves64 += [torch.randn(D, B, H, generator=gen, dtype=torch.float64) for _ in range(2)]
    leaves64 = [t.requires_grad_() for t in leaves64]
    leaves = [t.detach().to(DEVICE, torch.float32).requires_grad_() for t in leaves64]

    packed = pack_padded_sequence(leaves64[0], torch.tensor(lengths), enforce_sorted=False)
    out, (h, c) = ref(packed, (leaves64[1], leaves64[2]))
    expected = [pad_packed_sequence(out, total_length=T)[0], h, c]
    y, (h2, c2) = ours(leaves[0], (leaves[1], leaves[2]), lengths=torch.tensor(lengths))
    actual = [y, h2, c2]
    for b, n in enumerate(lengths):
        assert torch.equal(y[n:, b], torch.zeros_like(y[n:, b])), "output past a row's length must be zero"
    _assert_close(_grads_and_errors(ref, ours, leaves64, leaves, expected, actual, gen))
    for b, n in enumerate(lengths):
        assert torch.count_nonzero(leaves[0].grad[n:, b]) == 0, "gradient through padding must be zero"


@pytest.mark.parametrize("fusion", LEVELS)
def test_functional_lstm_with_lengths(fusion):
    """``lstm_triton.lstm(..., lengths=...)``: one layer, zero length keeps h0/c0."""
    torch.manual_seed(2)
    I, H, T = 4, 7, 5
    lengths = torch.tensor([5, 0, 2, 5])
    layer = nn.LSTM(I, H, dtype=torch.float64)
    x = torch.randn(T, 4, I, dtype=torch.float64)
    h0, c0 = torch.randn(4, H, dtype=torch.float64), torch.randn(4, H, dtype=torch.float64)
    params = [p.detach().float().to(DEVICE) for p in layer.parameters()]
    y, (h, c) = lstm_triton.lstm(x.float().to(DEVICE), *params, hx=(h0.float().to(DEVICE), c0.float().to(DEVICE)),
                                 lengths=lengths, fusion=fusion, backend="triton")
    for b, n in enumerate(lengths.tolist()):
        if n == 0:
            assert torch.equal(h[b].cpu(), h0[b].float()) and torch.equal(c[b].cpu(), c0[b].float())
            assert torch.count_nonzero(y[:, b]) == 0
            continue
        ry, (rh, rc) = layer(x[:n, b:b + 1], (h0[None, b:b + 1], c0[None, b:b + 1]))
        assert rel_err(y[:n, b], ry[:, 0]) <= TOL and torch.count_nonzero(y[n:, b]) == 0
        assert rel_err(h[b], rh[0, 0]) <= TOL and rel_err(c[b], rc[0, 0]) <= TOL


@pytest.mark.parametrize("bad, message", [
    ([1, 2], "lengths must be a 1-D sequence of 3 integers"),
    ([1.0, 2.0, 3.0], "lengths must hold integers"),
    ([1, 2, 9], r"lengths must lie in \[0, T=4\]"),
    ([-1, 2, 3], r"lengths must lie in \[0, T=4\]"),
    (torch.tensor([1, 2, 3], device="meta"), "lengths must hold values: got a meta tensor"),
], ids=["wrong-size", "float", "too-long", "negative", "meta"])
def test_bad_lengths_are_one_line_errors(bad, message):
    layer = lstm_triton.LSTM(2, 3, backend="triton", device=DEVICE)
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(4, 3, 2, device=DEVICE), lengths=bad if torch.is_tensor(bad) else torch.tensor(bad))


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_module_lengths_agree_across_backends_including_zero_length_rows(backend, batch_first):
    """``backend='torch'`` runs lengths through nn.LSTM's packed path; a row of length 0 keeps its
    state and outputs zeros on both backends."""
    torch.manual_seed(4)
    I, H, T = 3, 5, 4
    lengths = torch.tensor([4, 0, 2])
    ref = nn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=batch_first)
    ours = lstm_triton.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=batch_first, backend=backend)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn((3, T, I) if batch_first else (T, 3, I))
    h0, c0 = torch.randn(4, 3, H), torch.randn(4, 3, H)
    y, (h, c) = ours(x, (h0, c0), lengths=lengths)
    rows = [0, 2]  # nn.LSTM cannot pack a zero length: compare the others on their own
    sub = x[rows] if batch_first else x[:, rows]
    ry, (rh, rc) = ref(pack_padded_sequence(sub, lengths[rows], batch_first=batch_first, enforce_sorted=False),
                       (h0[:, rows], c0[:, rows]))
    ry = pad_packed_sequence(ry, batch_first=batch_first, total_length=T)[0]
    assert rel_err(y[rows] if batch_first else y[:, rows], ry) <= TOL
    assert rel_err(h[:, rows], rh) <= TOL and rel_err(c[:, rows], rc) <= TOL
    assert torch.equal(h[:, 1], h0[:, 1]) and torch.equal(c[:, 1], c0[:, 1])
    assert torch.count_nonzero(y[1] if batch_first else y[:, 1]) == 0


def test_lengths_with_a_packed_sequence_or_unbatched_input_is_an_error():
    layer = lstm_triton.LSTM(2, 3, backend="triton", device=DEVICE)
    packed = pack_padded_sequence(torch.randn(3, 2, 2, device=DEVICE), torch.tensor([3, 2]))
    for bad in (packed, torch.randn(3, 2, device=DEVICE)):
        with pytest.raises(ValueError, match="lengths: pass it with a padded, batched 3-D input"):
            layer(bad, lengths=torch.tensor([3, 2]))


@pytest.mark.parametrize("seed", [1, 2])
def test_packed_input_on_the_persistent_level_with_several_programs(seed, caplog):
    """The multi-program harness (tests/multiprogram.py) as for the dense path: H=40 -> 3 programs,
    B=17 -> two batch tiles, unsorted lengths from 1 to T."""
    import logging

    from lstm_triton.kernels.launch_config import use_gpu_tiles

    from .multiprogram import concurrent_programs

    use_gpu_tiles(True)
    try:
        with caplog.at_level(logging.DEBUG, logger="lstm_triton"), concurrent_programs(seed) as harness:
            lengths = [(b * 7) % 5 + 1 for b in range(17)]
            errors = compare_packed("persistent", lengths, I=3, H=40, seed=seed)
    finally:
        use_gpu_tiles(False)
    assert "fusion persistent -> persistent" in caplog.text
    if harness.active:
        programs = [launch.programs for launch in harness.launches if launch.kernel.startswith("persistent")]
        assert len(programs) == 2 and min(programs) >= 3, programs  # forward and backward, ≥ 3 programs each
    _assert_close(errors)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_TANH"])
def test_packed_input_of_another_dtype_is_nn_s_value_error(cell):
    """Packed data (2-D) in another dtype than the weights, autocast off: nn's dtype ValueError for
    dense input (under autocast any mix runs: test_autocast's packed cases). nn.GRU/RNN raise it
    for packed input too; nn.LSTM's packed path skips the check and fails later in ATen
    ("mat1 and mat2 must have the same dtype"), where ours keeps the clearer message."""
    from .helpers import CELLS

    ref_class, name, extra = CELLS[cell]
    ref, ours = ref_class(3, 5, **extra), getattr(lstm_triton, name)(3, 5, backend="triton", **extra).to(DEVICE)
    x = torch.randn(4, 2, 3).bfloat16()
    with pytest.raises(ValueError) as nn_dense:
        ref(x)
    with pytest.raises(ValueError, match=f"^{re.escape(str(nn_dense.value))}$"):
        ours(pack_padded_sequence(x, [4, 2]).to(DEVICE))
    if cell != "LSTM":
        with pytest.raises(ValueError, match=f"^{re.escape(str(nn_dense.value))}$"):
            ref(pack_padded_sequence(x, [4, 2]))
