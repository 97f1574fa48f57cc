import random

import pytest
import torch

from lstm_triton.charlm.data import (
    TIME_MACHINE_SHA256,
    CharData,
    CorpusError,
    load_corpus,
    random_iter,
    read_lines,
    sequential_iter,
)
from lstm_triton.charlm.data import corpus as corpus_module


def test_time_machine_corpus_matches_d2l():
    corpus = load_corpus()
    assert len(corpus) == 170_580
    assert len(corpus.vocab) == 28
    assert corpus.vocab.idx_to_token[:3] == ["<unk>", " ", "e"]
    assert sorted(corpus.vocab.idx_to_token[2:]) == [chr(c) for c in range(ord("a"), ord("z") + 1)]
    freqs = [f for _, f in corpus.vocab.token_freqs]
    assert freqs == sorted(freqs, reverse=True)
    assert corpus.vocab.decode(corpus.tokens[:13]) == "the time mach"


def test_unknown_token_maps_to_zero():
    vocab = load_corpus().vocab
    assert vocab["<unk>"] == 0 and vocab["#"] == 0 and vocab.encode("a#") == [vocab["a"], 0]


def test_shipped_corpus_is_checked_against_its_sha256(monkeypatch):
    monkeypatch.setattr(corpus_module, "TIME_MACHINE_SHA256", "0" * 64)
    with pytest.raises(CorpusError, match="sha256"):
        read_lines()
    assert TIME_MACHINE_SHA256.startswith("8424dbd9")


def test_max_tokens_and_validation_stream_follow_each_other():
    full = load_corpus().tokens
    data = CharData.load(batch_size=4, num_steps=5, max_tokens=1000, val_tokens=300)
    assert data.train_tokens == full[:1000]
    assert data.val_tokens == full[1000:1300]


@pytest.mark.parametrize("batch_size,num_steps", [(32, 35), (3, 7), (1, 1)])
def test_sequential_batches_continue_row_by_row(batch_size, num_steps):
    tokens = list(range(5000))
    batches = list(sequential_iter(tokens, batch_size, num_steps, random.Random(1)))
    assert batches, "no batches"
    for X, Y in batches:
        assert X.shape == Y.shape == (batch_size, num_steps) and X.dtype == torch.int64
        assert torch.equal(Y, X + 1)  # tokens are their positions here: Y is X shifted by one
    for (X0, _), (X1, _) in zip(batches, batches[1:]):
        assert torch.equal(X1[:, 0], X0[:, -1] + 1)


def test_sequential_offset_range_is_d2l_inclusive():
    offsets = {next(sequential_iter(list(range(200)), 2, 5, random.Random(s)))[0][0, 0].item() for s in range(200)}
    assert offsets == set(range(0, 6))  # randint(0, num_steps)


def test_random_iter_shapes_offsets_and_disjoint_subsequences():
    tokens = list(range(1000))
    offsets = set()
    for seed in range(100):
        batches = list(random_iter(tokens, 4, 7, random.Random(seed)))
        starts = torch.cat([X[:, 0] for X, _ in batches])
        assert all(X.shape == (4, 7) and torch.equal(Y, X + 1) for X, Y in batches)
        assert len(set(starts.tolist())) == len(starts)  # each subsequence at most once
        offset = int(starts.min()) % 7
        offsets.add(offset)
        assert len(batches) == ((1000 - offset - 1) // 7) // 4
    assert offsets == set(range(0, 7))  # randint(0, num_steps - 1)


def test_same_rng_seed_gives_same_batches():
    data = CharData.load(batch_size=4, num_steps=5, max_tokens=500, use_random_iter=True)
    a = [X for X, _ in data.train_batches(random.Random(3))]
    b = [X for X, _ in data.train_batches(random.Random(3))]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == len(b) > 0


def test_any_utf8_text_file_is_a_corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("Ab, ab!\nÉté — cd\n", encoding="utf-8")
    assert read_lines(path) == ["ab ab", "t cd"]
    corpus = load_corpus(path)
    assert corpus.vocab.decode(corpus.tokens) == "ab abt cd"


@pytest.mark.parametrize("content,match", [
    (None, "not found"),
    (b"", "no letters"),
    (b"1234 !!\n", "no letters"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not a text file"),
    (b"abc \xff\xfe def", "not UTF-8"),
])
def test_bad_corpus_files_raise_one_clear_error(tmp_path, content, match):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=match) as info:
        load_corpus(path)
    assert "\n" not in str(info.value)


def test_num_steps_longer_than_corpus_is_rejected():
    with pytest.raises(ValueError, match="num_steps=20000"):
        CharData.load(num_steps=20_000)
