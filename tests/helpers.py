"""Shared helpers for the tests."""

import functools

import torch
from torch import nn

import lstm_triton

# Where the Triton kernels run: CUDA when present, else CPU tensors under TRITON_INTERPRET=1.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}


@functools.cache
def nn_lstm_runs_bf16_on_cpu() -> bool:
    """Whether nn.LSTM's CPU bf16 kernel (oneDNN) runs on this CPU: it needs AVX-512 (BF16) or AMX;
    elsewhere (e.g. an AMD EPYC without AVX-512) it refuses some bf16-autocast calls ("could not
    create a primitive descriptor") and runs others in fp32. Tests that read nn's dtypes there
    compare with nn's documented autocast rule (AVX-512 CPUs, cuDNN) instead."""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            nn.LSTM(3, 5)(torch.randn(4, 2, 3))
    except RuntimeError as err:
        if "primitive descriptor" not in str(err):
            raise
        return False
    return True


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64; NaN anywhere gives inf so it never passes a ≤ check."""
    a, b = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != {tuple(b.shape)}"
    if not torch.isfinite(a).all():
        return float("inf")
    denom = b.norm()
    return float((a - b).norm() / denom) if denom > 0 else float((a - b).norm())


def char_lm_losses(impl: str, steps: int = 20, fusion: str = "auto", hidden: int = 32, seed: int = 3,
                   device: str = "cpu", *, cell: str = "lstm", nonlinearity: str = "tanh",
                   prepare=None, compile_mode: str | None = None, num_layers: int = 1,
                   seq_len: int = 12) -> torch.Tensor:
    """Train a char LM ``steps`` SGD steps (lr 1, clip 1, state carried) on fixed random batches of
    8 × ``seq_len`` tokens; the per-step losses. Weights depend only on ``seed`` (and the cell, and
    ``num_layers``), so every impl starts identical. ``prepare(model)``, if given, runs on the model
    before training; ``compile_mode`` trains through ``torch.compile(model, mode=compile_mode)``
    (the carried state is cloned: CUDA graphs overwrite their outputs on the next replay)."""
    from lstm_triton.charlm.impls import build_char_lm
    from lstm_triton.charlm.model import detach_state
    from lstm_triton.charlm.train import clip_gradients

    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 28, (8, seq_len), generator=gen) for _ in range(steps + 1)]
    model = build_char_lm(impl, 28, hidden, seed=seed, fusion=fusion, device=device, cell=cell,
                          nonlinearity=nonlinearity, num_layers=num_layers)
    if prepare is not None:
        prepare(model)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    state, losses = model.begin_state(8, device), []
    run = model if compile_mode is None else torch.compile(model, mode=compile_mode)
    for X, Y in zip(batches, batches[1:]):
        logits, state = run(X.to(device), detach_state(state))
        if compile_mode is not None:
            state = tuple(s.clone() for s in state) if isinstance(state, tuple) else state.clone()
        loss = torch.nn.functional.cross_entropy(logits, Y.T.reshape(-1).to(device))
        opt.zero_grad()
        loss.backward()
        clip_gradients(model, 1.0)
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float64)


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs()).max())


# Module configurations every layer class is checked in (compare_with_nn keyword arguments).
MODULE_VARIANTS = {
    "2-layers": dict(num_layers=2), "bidirectional": dict(bidirectional=True), "batch-first": dict(batch_first=True),
    "unbatched": dict(unbatched=True), "no-bias": dict(bias=False), "no-state": dict(with_state=False),
    "2-layers-bi-bf": dict(num_layers=2, bidirectional=True, batch_first=True),
    "dropout-1": dict(num_layers=2, dropout=1.0, train=True),  # p=1 zeroes layer 1's output in both: deterministic
}
CELLS = {"LSTM": (nn.LSTM, "LSTM", {}), "GRU": (nn.GRU, "GRU", {}),
         "RNN_TANH": (nn.RNN, "RNN", {"nonlinearity": "tanh"}), "RNN_RELU": (nn.RNN, "RNN", {"nonlinearity": "relu"})}


def compare_with_nn(fusion, T, B, I, H, *, num_layers=1, bidirectional=False, batch_first=False,
                    unbatched=False, bias=True, with_state=True, dtype=torch.float32, seed=0, dropout=0.0,
                    train=False, layer_class=None, before_backward=None, proj_size=0, cell="LSTM"):
    """Run both on the same weights/inputs/upstream grads; return {name: relative error}.

    ``cell``: nn.RNNBase.mode of the layer pair (LSTM, GRU, RNN_TANH, RNN_RELU): nn's class in
    float64 against lstm_triton's (GRU and RNN have the one state h: no c_n, d_c0).

    ``before_backward``: called between our forward and our backward (e.g. to break only the
    backward kernel in a negative control)."""
    gen = torch.Generator().manual_seed(seed)
    kwargs = dict(num_layers=num_layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional,
                  dropout=dropout, proj_size=proj_size)
    ref_class, ours_name, extra = CELLS[cell]
    if cell != "LSTM":
        del kwargs["proj_size"]
    kwargs.update(extra)
    ref = ref_class(I, H, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    if layer_class is None:
        ours = getattr(lstm_triton, ours_name)(I, H, fusion=fusion, backend="triton", device=DEVICE, dtype=dtype,
                                               **kwargs)
    else:  # a baseline in the same precision, e.g. nn.LSTM in fp32
        ours = layer_class(I, H, device=DEVICE, dtype=dtype, **kwargs)
    ours.load_state_dict(ref.state_dict())
    ref.train(train)
    ours.train(train)

    D = 2 if bidirectional else 1
    x_shape = (T, I) if unbatched else ((B, T, I) if batch_first else (T, B, I))
    s_shape = (num_layers * D, H) if unbatched else (num_layers * D, B, H)
    h_shape = s_shape[:-1] + (proj_size or H,)
    leaves64 = [torch.randn(x_shape, generator=gen, dtype=torch.float64)]
    if with_state:
        shapes = (h_shape, s_shape) if cell == "LSTM" else (h_shape,)
        leaves64 += [torch.randn(shape, generator=gen, dtype=torch.float64) for shape in shapes]
    leaves64 = [t.requires_grad_() for t in leaves64]
    leaves = [t.detach().to(DEVICE, dtype).requires_grad_() for t in leaves64]

    def run(model, xs):
        if cell != "LSTM":
            return model(xs[0], xs[1] if with_state else None)
        out, (h, c) = model(xs[0], (xs[1], xs[2]) if with_state else None)
        return out, h, c

    expected = run(ref, leaves64)
    actual = run(ours, leaves)
    upstream = [torch.randn(e.shape, generator=gen, dtype=torch.float64) for e in expected]
    sum(((e * u).sum() for e, u in zip(expected, upstream)), torch.zeros((), dtype=torch.float64)).backward()
    if before_backward is not None:
        before_backward()
    sum((a.float() * u.to(a.device, torch.float32)).sum() for a, u in zip(actual, upstream)).backward()

    errors = {name: rel_err(a, e) for name, a, e in zip(("output", "h_n", "c_n"), actual, expected)}
    for name, a, e in zip(("d_input", "d_h0", "d_c0"), leaves, leaves64):
        errors[name] = rel_err(a.grad, e.grad)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        errors[f"d_{name}"] = rel_err(p.grad, q.grad)
    return errors


def assert_close(errors, dtype=torch.float32):
    bad = {k: v for k, v in errors.items() if not v <= TOL[dtype]}
    assert not bad, f"relative errors above {TOL[dtype]}: {bad}"
