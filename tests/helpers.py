"""Shared helpers for the tests."""

import torch

# Where the Triton kernels run: CUDA when present, else CPU tensors under TRITON_INTERPRET=1.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


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
                   prepare=None) -> torch.Tensor:
    """Train a char LM ``steps`` SGD steps (lr 1, clip 1, state carried) on fixed random batches;
    the per-step losses. Weights depend only on ``seed`` (and the cell), so every impl starts
    identical. ``prepare(model)``, if given, runs on the model before training."""
    from lstm_triton.impls import build_char_lm
    from lstm_triton.model import detach_state
    from lstm_triton.train import clip_gradients

    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 28, (8, 12), generator=gen) for _ in range(steps + 1)]
    model = build_char_lm(impl, 28, hidden, seed=seed, fusion=fusion, device=device, cell=cell,
                          nonlinearity=nonlinearity)
    if prepare is not None:
        prepare(model)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    state, losses = model.begin_state(8, device), []
    for X, Y in zip(batches, batches[1:]):
        logits, state = model(X.to(device), detach_state(state))
        loss = torch.nn.functional.cross_entropy(logits, Y.T.reshape(-1).to(device))
        opt.zero_grad()
        loss.backward()
        clip_gradients(model, 1.0)
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float64)


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs()).max())
