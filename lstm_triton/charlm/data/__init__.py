"""The Time Machine data pipeline (d2l semantics) with a held-out validation stream.

>>> data = CharData.load(batch_size=32, num_steps=35)        # shipped corpus
>>> len(data.vocab), len(data.train_tokens)
(28, 10000)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .corpus import TIME_MACHINE_SHA256, Corpus, CorpusError, Vocab, load_corpus, read_lines
from .iterators import Batch, num_batches, random_iter, sequential_iter

__all__ = [
    "TIME_MACHINE_SHA256", "Batch", "CharData", "Corpus", "CorpusError", "Vocab",
    "load_corpus", "num_batches", "random_iter", "read_lines", "sequential_iter",
]


@dataclass
class CharData:
    """Training window (first ``max_tokens`` tokens) and validation stream (the next ``val_tokens``).

    ``train_batches(rng)`` is d2l's iterator (sequential by default, random with
    ``use_random_iter``); ``val_batches()`` walks the validation text sequentially from offset 0,
    so every run and every implementation is scored on exactly the same batches.
    """

    vocab: Vocab
    train_tokens: list[int]
    val_tokens: list[int]
    batch_size: int
    num_steps: int
    use_random_iter: bool = False

    @classmethod
    def load(
        cls,
        batch_size: int = 32,
        num_steps: int = 35,
        max_tokens: int | None = 10_000,
        val_tokens: int = 5_000,
        use_random_iter: bool = False,
        corpus: str | Path | None = None,
    ) -> CharData:
        for name, value in (("batch_size", batch_size), ("num_steps", num_steps)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if max_tokens is not None and max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive (or None for all), got {max_tokens}")
        if val_tokens < 0:
            raise ValueError(f"val_tokens must be >= 0, got {val_tokens}")
        full = load_corpus(corpus)
        if max_tokens is None:
            max_tokens = max(len(full) - val_tokens, 0)
        train = full.tokens[:max_tokens]
        val = full.tokens[max_tokens:max_tokens + val_tokens]
        if num_batches(len(train), batch_size, num_steps) == 0:
            need = batch_size * num_steps + num_steps + 1
            raise ValueError(
                f"num_steps={num_steps} with batch_size={batch_size} needs at least {need} training "
                f"tokens, but the training stream has {len(train)}"
            )
        return cls(full.vocab, train, val, batch_size, num_steps, use_random_iter)

    def train_batches(self, rng: random.Random) -> Iterator[Batch]:
        make = random_iter if self.use_random_iter else sequential_iter
        return make(self.train_tokens, self.batch_size, self.num_steps, rng)

    def val_batches(self) -> Iterator[Batch]:
        return sequential_iter(self.val_tokens, self.batch_size, self.num_steps)

    @property
    def has_validation(self) -> bool:
        return len(self.val_tokens) > self.batch_size * self.num_steps
