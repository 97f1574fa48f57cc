"""``lstm-triton generate`` and lstm_triton.charlm.generate: greedy text equal to what ``train``
prints, reproducible sampling, checkpoints of every cell and implementation, one-line refusals."""

import contextlib
import io
import math

import pytest
import torch

from lstm_triton.charlm.checkpoint import load_checkpoint, save_checkpoint
from lstm_triton.charlm.cli import PREFIXES, main
from lstm_triton.charlm.data import CharData
from lstm_triton.charlm.generate import load_for_generation, next_token, sample, unknown_characters
from lstm_triton.charlm.impls import build_char_lm
from lstm_triton.charlm.model import predict

NUM_PREDS = 30
# lr 8 on 200 tokens: after 8 epochs the greedy text is no longer the untrained model's (spaces).
TINY = ["--hidden-size", "16", "--batch-size", "4", "--num-steps", "6", "--max-tokens", "200",
        "--val-tokens", "50", "--epochs", "8", "--lr", "8", "--no-progress", "--num-preds", str(NUM_PREDS)]
RUNS = {
    "nn-lstm": ["--impl", "nn"], "naive-lstm": ["--impl", "naive"],
    "nn-gru": ["--impl", "nn", "--cell", "gru"], "naive-gru": ["--impl", "naive", "--cell", "gru"],
    "nn-rnn-relu": ["--impl", "nn", "--cell", "rnn", "--nonlinearity", "relu"],
    "naive-rnn-relu": ["--impl", "naive", "--cell", "rnn", "--nonlinearity", "relu"],
}


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``trained(name)`` -> (checkpoint path, the lines train printed), each run trained once."""
    runs = {}

    def get(name: str):
        if name not in runs:
            ckpt = tmp_path_factory.mktemp(name) / "run.pt"
            code, out, err = cli("train", *TINY, *RUNS[name], "--save", str(ckpt))
            assert code == 0, err
            runs[name] = (str(ckpt), out.splitlines()[:len(PREFIXES)])
        return runs[name]

    return get


def generate(ckpt, *args):
    return cli("generate", "--checkpoint", ckpt, *args)


@pytest.mark.parametrize("run", RUNS)
def test_greedy_text_is_what_train_printed(trained, run):
    ckpt, printed = trained(run)
    for prefix, line in zip(PREFIXES, printed):
        code, out, err = generate(ckpt, "--prefix", prefix, "--num-chars", str(NUM_PREDS), "--temperature", "0")
        assert code == 0 and err == "", err
        assert out == line + "\n"
    assert len(set(printed[0][len(PREFIXES[0]):])) > 1, "the trained text should not be one repeated character"


def test_the_default_is_greedy_from_time_traveller(trained):
    ckpt, printed = trained("nn-lstm")
    code, out, _ = generate(ckpt, "--num-chars", str(NUM_PREDS))
    assert code == 0 and out == printed[0] + "\n"
    assert generate(ckpt, "--num-chars", "0") == (0, "time traveller\n", "")


def test_another_impl_continues_the_same_text(trained):
    ckpt, printed = trained("naive-gru")
    code, out, _ = generate(ckpt, "--impl", "nn", "--num-chars", str(NUM_PREDS))
    assert code == 0 and out == printed[0] + "\n"


def test_a_seed_reproduces_the_sample_and_another_seed_does_not(trained):
    ckpt, printed = trained("nn-gru")
    runs = {seed: generate(ckpt, "--temperature", "1", "--seed", seed, "--num-chars", "60") for seed in ("1", "2", "3")}
    assert all(code == 0 for code, _, _ in runs.values())
    assert runs["1"] == generate(ckpt, "--temperature", "1", "--seed", "1", "--num-chars", "60")
    texts = {runs[s][1] for s in "123"}
    assert len(texts) == 3 and all(t.startswith("time traveller") and len(t) == 14 + 60 + 1 for t in texts)
    assert printed[0] + "\n" not in texts  # sampled, not greedy


def test_top_k_1_is_greedy(trained):
    ckpt, printed = trained("nn-gru")
    code, out, _ = generate(ckpt, "--temperature", "1.5", "--top-k", "1", "--seed", "7",
                            "--num-chars", str(NUM_PREDS))
    assert code == 0 and out == printed[0] + "\n"


def _with_impl(src: str, dst, impl: str) -> str:
    payload = load_checkpoint(src)
    payload["config"]["impl"] = impl
    save_checkpoint(dst, {k: v for k, v in payload.items() if k not in ("format", "version")})
    return str(dst)


def test_a_triton_checkpoint_without_the_interpreter_runs_on_nn_and_says_so(trained, tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device runs the kernels")
    src, printed = trained("nn-lstm")
    ckpt = _with_impl(src, tmp_path / "triton.pt", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    code, out, err = generate(ckpt, "--num-chars", str(NUM_PREDS))
    assert code == 0 and out == printed[0] + "\n"
    assert len(err.splitlines()) == 1 and "impl 'triton' needs a CUDA device" in err and "impl 'nn'" in err
    code, out, err = generate(ckpt, "--impl", "triton")  # asked for explicitly: refused
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and "needs a CUDA device" in err


def test_a_triton_checkpoint_runs_the_kernels(trained, tmp_path):
    """Interpreted on the CPU (conftest sets TRITON_INTERPRET=1): the fused layer, same text as nn."""
    src, printed = trained("nn-lstm")
    ckpt = _with_impl(src, tmp_path / "triton.pt", "triton")
    loaded = load_for_generation(ckpt, "cpu")
    assert loaded.impl == "triton" and loaded.note is None and type(loaded.model.rnn).__module__.startswith(
        "lstm_triton.layers")
    code, out, err = generate(ckpt, "--num-chars", "12", "--device", "cpu")
    assert code == 0 and err == "" and out == printed[0][:len(PREFIXES[0]) + 12] + "\n"


def test_loaded_weights_are_the_trained_ones(trained):
    from lstm_triton.charlm.impls import portable_state_dict

    ckpt, _ = trained("naive-rnn-relu")
    loaded = load_for_generation(ckpt, "cpu", impl="nn")
    saved = load_checkpoint(ckpt)["model"]
    state = portable_state_dict(loaded.model)
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
    assert loaded.model.mode == "rnn_relu" and loaded.vocab.idx_to_token == load_checkpoint(ckpt)["vocab"]


def _foreign(tmp_path, kind: str, trained) -> str:
    path = tmp_path / f"{kind}.pt"
    if kind == "text":
        path.write_text("time traveller\n")
    elif kind == "pickle":
        torch.save({"model": {"w": torch.zeros(2)}}, path)
    else:  # an lstm-triton checkpoint whose config does not fit its weights
        payload = load_checkpoint(trained("nn-lstm")[0])
        payload["config"]["hidden_size"] = 24
        save_checkpoint(path, {k: v for k, v in payload.items() if k not in ("format", "version")})
    return str(path)


BAD = {
    "empty prefix": (["--prefix", ""], "--prefix: expected a non-empty string"),
    "unknown characters": (["--prefix", "Time, traveller"], "--prefix: characters outside the checkpoint's "
                                                             "vocabulary: 'T', ','"),
    "negative temperature": (["--temperature", "-0.5"], "--temperature: expected a finite number >= 0"),
    "nan temperature": (["--temperature", "nan"], "--temperature: expected a finite number >= 0"),
    "inf temperature": (["--temperature", "inf"], "--temperature: expected a finite number >= 0"),
    "top-k 0": (["--temperature", "1", "--top-k", "0"], "--top-k: expected a positive integer"),
    "top-k when greedy": (["--top-k", "3"], "--top-k: applies to sampling"),
    "seed when greedy": (["--seed", "3"], "--seed: applies to sampling"),
    "seed out of range": (["--temperature", "1", "--seed", str(2 ** 64)], "--seed: expected an integer in"),
    "negative num-chars": (["--num-chars", "-1"], "--num-chars: expected an integer >= 0"),
    "unknown impl": (["--impl", "gru"], "--impl: invalid choice"),
    "missing file": (["--checkpoint", "/nonexistent/run.pt"], "checkpoint: no checkpoint file at /nonexistent"),
    "text file": (["--checkpoint", "text"], "is not a readable checkpoint"),
    "foreign pickle": (["--checkpoint", "pickle"], "is not an lstm-triton checkpoint"),
    "config and weights disagree": (["--checkpoint", "mismatch"], "its weights do not fit its config"),
}


@pytest.mark.parametrize("args,needle", BAD.values(), ids=BAD.keys())
def test_bad_input_is_one_line_exit_2_and_writes_nothing(trained, tmp_path, args, needle):
    ckpt, _ = trained("nn-lstm")
    if "--checkpoint" in args:
        i = args.index("--checkpoint") + 1
        if not args[i].startswith("/"):
            args = [*args[:i], _foreign(tmp_path, args[i], trained), *args[i + 1:]]
    before = sorted(tmp_path.iterdir())
    code, out, err = cli("generate", "--checkpoint", ckpt, *args)  # a later --checkpoint wins
    assert code == 2 and out == ""
    assert err.startswith("lstm-triton generate: error: ") and len(err.splitlines()) == 1, err
    assert needle in err, err
    assert sorted(tmp_path.iterdir()) == before


def test_cuda_without_a_gpu_is_one_line(trained):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    code, _, err = generate(trained("nn-lstm")[0], "--device", "cuda")
    assert code == 2 and len(err.splitlines()) == 1 and "cuda was asked for" in err


# -- the library -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_vocab():
    vocab = CharData.load(4, 6, 200, 0).vocab
    return build_char_lm("nn", len(vocab), 16, seed=1), vocab


def test_greedy_sample_is_predict_and_restores_the_mode(model_and_vocab):
    model, vocab = model_and_vocab
    model.train()
    assert sample(model, "the time", 25, vocab) == predict(model, "the time", 25, vocab)
    assert model.training


def test_a_tiny_temperature_is_greedy_not_nan(model_and_vocab):
    """(logits - max) / T: the maximum stays 0, the others go to -inf; logits / T would overflow
    to inf - inf = NaN in softmax (5 / 1e-38 > float32's maximum)."""
    model, vocab = model_and_vocab
    gen = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.0, 5.0, 4.9, -3.0])
    assert {next_token(logits, 1e-38, None, gen) for _ in range(20)} == {1}
    assert sample(model, "time", 25, vocab, temperature=1e-38, generator=gen) == sample(model, "time", 25, vocab)


def test_top_k_draws_only_the_k_most_likely():
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0, 2.8, 1.0])
    gen = torch.Generator().manual_seed(0)
    drawn = {next_token(logits, 5.0, 2, gen) for _ in range(300)}
    assert drawn == {1, 2}
    assert {next_token(logits, 5.0, 99, gen) for _ in range(300)} == set(range(6))  # k > V: all


@pytest.mark.parametrize("kwargs,needle", [
    (dict(prefix=""), "prefix"), (dict(num_chars=-1), "num_chars"), (dict(temperature=-1.0), "temperature"),
    (dict(temperature=math.inf), "temperature"), (dict(temperature=1.0, top_k=0), "top_k"),
])
def test_sample_rejects_bad_arguments(model_and_vocab, kwargs, needle):
    model, vocab = model_and_vocab
    args = dict(prefix="time", num_chars=5) | kwargs
    with pytest.raises(ValueError, match=needle):
        sample(model, args.pop("prefix"), args.pop("num_chars"), vocab, **args)


def test_unknown_characters_are_named_once_in_order(model_and_vocab):
    _, vocab = model_and_vocab
    assert unknown_characters("Time, Time!", vocab) == ["T", ",", "!"]
    assert unknown_characters("time traveller", vocab) == []
