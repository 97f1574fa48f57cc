"""d2l's minibatch iterators over a token stream, plus a deterministic one for validation.

Each yields ``(X, Y)``, both ``int64`` tensors of shape ``(batch_size, num_steps)``, with
``Y`` the stream shifted by one token. The random offsets come from the ``rng`` you pass
(a ``random.Random``), so a run is reproducible and resumable from its RNG state.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


def random_iter(tokens: list[int], batch_size: int, num_steps: int, rng: random.Random) -> Iterator[Batch]:
    """Shuffled subsequences (offset in [0, num_steps-1]); neighbours in a batch are unrelated."""
    tokens = tokens[rng.randint(0, num_steps - 1):]
    num_subseqs = (len(tokens) - 1) // num_steps
    starts = list(range(0, num_subseqs * num_steps, num_steps))
    rng.shuffle(starts)
    num_batches = num_subseqs // batch_size
    for b in range(num_batches):
        chosen = starts[b * batch_size:(b + 1) * batch_size]
        X = [tokens[j:j + num_steps] for j in chosen]
        Y = [tokens[j + 1:j + 1 + num_steps] for j in chosen]
        yield torch.tensor(X), torch.tensor(Y)


def sequential_iter(
    tokens: list[int], batch_size: int, num_steps: int, rng: random.Random | None = None
) -> Iterator[Batch]:
    """Row r of batch k+1 continues row r of batch k (offset in [0, num_steps]; 0 without rng)."""
    offset = rng.randint(0, num_steps) if rng is not None else 0
    num_tokens = ((len(tokens) - offset - 1) // batch_size) * batch_size
    Xs = torch.tensor(tokens[offset:offset + num_tokens]).reshape(batch_size, -1)
    Ys = torch.tensor(tokens[offset + 1:offset + 1 + num_tokens]).reshape(batch_size, -1)
    num_batches = Xs.shape[1] // num_steps
    for i in range(0, num_steps * num_batches, num_steps):
        yield Xs[:, i:i + num_steps], Ys[:, i:i + num_steps]


def num_batches(num_tokens: int, batch_size: int, num_steps: int) -> int:
    """A lower bound on the batches either iterator yields from ``num_tokens`` tokens, any offset."""
    return (num_tokens - num_steps - 1) // (batch_size * num_steps) if num_tokens > num_steps else 0
