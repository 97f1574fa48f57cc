"""The Time Machine corpus with d2l's preprocessing, and its character vocabulary.

d2l (classic API) reads the text line by line, keeps letters only
(``re.sub('[^A-Za-z]+', ' ', line).strip().lower()``), tokenises into characters and joins
the lines with no separator. The vocabulary puts ``<unk>`` at index 0, then tokens by
descending frequency (a stable sort, so ties keep first-seen order).
"""

from __future__ import annotations

import collections
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

TIME_MACHINE_SHA256 = "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516"
UNK = "<unk>"


class CorpusError(ValueError):
    """A corpus file that is missing, unreadable, not UTF-8 text, or empty after cleaning."""


def _shipped_corpus_bytes() -> bytes:
    data = resources.files("lstm_triton.charlm.data").joinpath("timemachine.txt").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != TIME_MACHINE_SHA256:
        raise CorpusError(
            f"shipped timemachine.txt has sha256 {digest}, expected {TIME_MACHINE_SHA256}; "
            "the package data is corrupt, reinstall lstm-triton"
        )
    return data


def read_lines(path: str | Path | None = None) -> list[str]:
    """Cleaned lines of ``path`` (default: the shipped Time Machine, sha256-checked)."""
    if path is None:
        raw = _shipped_corpus_bytes()
        where = "timemachine.txt"
    else:
        where = str(path)
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            raise CorpusError(f"corpus: file not found: {where}") from None
        except IsADirectoryError:
            raise CorpusError(f"corpus: {where} is a directory, expected a UTF-8 text file") from None
        except OSError as exc:
            raise CorpusError(f"corpus: cannot read {where}: {exc.strerror}") from None
    if b"\x00" in raw:
        raise CorpusError(f"corpus: {where} is not a text file (it contains NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"corpus: {where} is not UTF-8 text (bad byte at offset {exc.start})"
        ) from None
    lines = [re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in text.splitlines()]
    if not any(lines):
        raise CorpusError(f"corpus: {where} has no letters A-Z after cleaning, nothing to train on")
    return lines


class Vocab:
    """Token <-> index map: ``<unk>`` first, then tokens by descending frequency (stable)."""

    def __init__(self, tokens: list[str]):
        counts = collections.Counter(tokens)
        by_freq = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
        self.idx_to_token: list[str] = [UNK] + [tok for tok, _ in by_freq if tok != UNK]
        self.token_to_idx: dict[str, int] = {t: i for i, t in enumerate(self.idx_to_token)}
        self.token_freqs: list[tuple[str, int]] = by_freq

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __getitem__(self, token: str) -> int:
        return self.token_to_idx.get(token, 0)

    def encode(self, text: str) -> list[int]:
        return [self[ch] for ch in text]

    def decode(self, indices) -> str:
        return "".join(self.idx_to_token[int(i)] for i in indices)


@dataclass
class Corpus:
    """All token ids of a cleaned text (``list[int]``) and its vocabulary."""

    tokens: list[int]
    vocab: Vocab

    def __len__(self) -> int:
        return len(self.tokens)


def load_corpus(path: str | Path | None = None) -> Corpus:
    """The whole cleaned corpus as character ids (d2l's ``load_corpus_time_machine(-1)``)."""
    chars = [ch for line in read_lines(path) for ch in line]
    vocab = Vocab(chars)
    return Corpus([vocab[ch] for ch in chars], vocab)
