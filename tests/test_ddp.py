"""Distributed data-parallel training (lstm_triton.charlm.distributed): gloo, 2 CPU processes.

Each torchrun launch costs ~16 CPU-s of imports (torchrun and two workers importing torch and
lstm_triton), so only the kill-and-resume test launches torchrun (twice: the killed run with
``-m lstm_triton``, the resume with the ``lstm-triton`` console script). The other tests fork the
ranks from this process, which has everything imported, and give each torchrun's environment
(WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT and the agent's store, hosted here as torchrun's
agent hosts it), so the CLI runs the same code path as under torchrun.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from lstm_triton.charlm import checkpoint, cli, distributed, plot
from lstm_triton.charlm import train as train_module
from lstm_triton.charlm.impls import build_char_lm
from lstm_triton.charlm.train import clip_gradients

from .helpers import rel_err

WORLD = 2
# 62 batches of 8 rows a epoch: long enough (~0.2-0.5 s for 2 ranks) to kill a run mid-epoch
ARGS = ["--impl", "nn", "--hidden-size", "16", "--batch-size", "8", "--num-steps", "8", "--max-tokens", "4000",
        "--val-tokens", "100", "--epochs", "2", "--no-progress", "--num-preds", "5"]
TIMEOUT = 120  # s: a hung collective fails the test instead of hanging CI


# -- forked ranks with torchrun's environment -----------------------------------------------------
def _rank_process(rank: int, port: int, target, out_dir: Path) -> None:
    os.environ.update(
        WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        TORCHELASTIC_USE_AGENT_STORE="True", TORCHELASTIC_RESTART_COUNT="0",  # as torchrun's workers
    )
    torch.set_num_threads(1)
    code = 99
    with open(out_dir / f"rank{rank}.out", "w") as out, open(out_dir / f"rank{rank}.err", "w") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout, sys.stderr = out, err
        try:
            code = target()
        except BaseException:
            traceback.print_exc()
        finally:
            out.flush()
            err.flush()
    os._exit(code)  # not pytest's exit handlers: this is a fork of the test process


def run_ranks(target, out_dir: Path) -> list[tuple[int, str, str]]:
    """Run ``target()`` on WORLD forked ranks; each rank's (exit status, stdout, stderr)."""
    out_dir.mkdir(exist_ok=True)
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)  # port 0: a free one
    fork = multiprocessing.get_context("fork")
    ranks = [fork.Process(target=_rank_process, args=(r, store.port, target, out_dir)) for r in range(WORLD)]
    for p in ranks:
        p.start()
    deadline = time.monotonic() + TIMEOUT
    for p in ranks:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [r for r, p in enumerate(ranks) if p.is_alive()]
    for p in ranks:
        if p.is_alive():
            p.kill()
            p.join()
    assert not hung, f"ranks {hung} still running after {TIMEOUT} s"
    return [(p.exitcode, (out_dir / f"rank{r}.out").read_text(), (out_dir / f"rank{r}.err").read_text())
            for r, p in enumerate(ranks)]


def _logging_writes(log: list):
    """Wrap atomic_write (every file the CLI writes: checkpoints, CSV, figure) to record which rank wrote
    what, and when it was done (CLOCK_MONOTONIC: one clock for all processes of the machine)."""
    original = checkpoint.atomic_write

    def logged(path, write):
        original(path, write)
        log.append((Path(path).name, time.monotonic()))

    checkpoint.atomic_write = cli.atomic_write = plot.atomic_write = logged


SLOW_EPOCH = 1000.0  # s: every epoch of the rank given the slow clock lasts exactly this long


def _slow_clock() -> None:
    """This rank's training clock advances SLOW_EPOCH per read: each of its epochs lasts SLOW_EPOCH s."""
    reads = iter(range(1 << 30))
    train_module.time = types.SimpleNamespace(perf_counter=lambda: SLOW_EPOCH * next(reads))


def cli_on_ranks(argv: list[str], out_dir: Path, slow_rank: int | None = None, late_rank: int | None = None,
                 ) -> list[dict]:
    """``lstm-triton train argv`` on WORLD forked ranks, per rank: exit ``code``, ``out``, ``err``,
    ``writes`` (names of the files it wrote, in order, with the time each was done), ``start`` and
    ``done`` (when cli.main was called and returned). ``slow_rank``'s epochs last SLOW_EPOCH s by
    its clock; ``late_rank`` starts 1 s after the others."""
    def target():
        log: list = []
        _logging_writes(log)
        if distributed.rank() == slow_rank:
            _slow_clock()
        if distributed.rank() == late_rank:
            time.sleep(1.0)
        start = time.monotonic()
        code = cli.main(["train", *argv])
        torch.save({"writes": log, "start": start, "done": time.monotonic()}, out_dir / f"log{distributed.rank()}.pt")
        return code

    ranks = []
    for r, (code, out, err) in enumerate(run_ranks(target, out_dir)):
        log = torch.load(out_dir / f"log{r}.pt") if (out_dir / f"log{r}.pt").exists() else {}
        ranks.append({"code": code, "out": out, "err": err, **log})
    return ranks


def cli_one_process(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["train", *argv])
    return code, out.getvalue(), err.getvalue()


def max_rel(a: pd.Series, b: pd.Series) -> float:
    return float(((a - b) / b).abs().max())


def assert_same_run(csv: Path, ckpt: Path | None, ref_csv: Path, ref_ckpt: Path | None) -> None:
    """Per-epoch metrics and final checkpoint of two runs equal (≤ 1e-6 relative)."""
    got, ref = pd.read_csv(csv), pd.read_csv(ref_csv)
    assert got["epoch"].tolist() == ref["epoch"].tolist() and got["tokens"].tolist() == ref["tokens"].tolist()
    for column in ("train_loss", "train_perplexity", "val_perplexity"):
        assert max_rel(got[column], ref[column]) <= 1e-6, (column, got[column].tolist(), ref[column].tolist())
    if ckpt is None:
        return
    a, b = torch.load(ckpt, weights_only=False), torch.load(ref_ckpt, weights_only=False)
    assert a["epoch"] == b["epoch"] and a["config"] == b["config"] and a["data_rng"] == b["data_rng"]
    assert sorted(a["model"]) == sorted(b["model"])  # the eager module's names: no "module." prefix
    for name in a["model"]:
        assert rel_err(a["model"][name], b["model"][name]) <= 1e-6, name


@pytest.fixture(scope="module")
def two_and_one(tmp_path_factory):
    """The same run (ARGS, --save, --metrics-csv, --plot) on 2 ranks and in one plain process:
    {"two": (its directory, each rank's results), "one": (its directory, its results)}."""
    two, one = tmp_path_factory.mktemp("two"), tmp_path_factory.mktemp("one")

    def files(where):
        return ["--save", str(where / "run.ckpt"), "--metrics-csv", str(where / "metrics.csv"),
                "--plot", str(where / "ppl.png")]

    return {"two": (two, cli_on_ranks([*ARGS, *files(two)], tmp_path_factory.mktemp("ranks"), slow_rank=1)),
            "one": (one, cli_one_process([*ARGS, *files(one)]))}


# -- (a) 2 ranks = 1 process, files written once -------------------------------------------------
def test_two_processes_train_as_one_process_on_the_same_global_batch(two_and_one):
    (two, ranks), (one, single) = two_and_one["two"], two_and_one["one"]
    assert single[0] == 0 and [r["code"] for r in ranks] == [0, 0], [r["err"] for r in ranks]
    assert_same_run(two / "metrics.csv", two / "run.ckpt", one / "metrics.csv", one / "run.ckpt")
    metrics = pd.read_csv(two / "metrics.csv")  # an epoch lasts as long as its slowest rank (rank 1 here)
    assert (metrics["seconds"] == SLOW_EPOCH).all()
    assert (metrics["tokens_per_sec"] == metrics["tokens"] / SLOW_EPOCH).all()


def test_only_rank_0_writes_and_prints(two_and_one):
    (two, ranks), (_, single) = two_and_one["two"], two_and_one["one"]
    rank0, rank1 = ranks
    # per epoch the checkpoint and the figure, at the end the CSV
    assert [name for name, _ in rank0["writes"]] == ["run.ckpt", "ppl.png", "run.ckpt", "ppl.png", "metrics.csv"]
    assert rank1["writes"] == [] and rank1["out"] == "" and rank1["err"] == ""
    assert rank1["done"] >= rank0["writes"][-1][1]  # rank 1 waited for rank 0's files (the final barrier)
    lines, single_lines = rank0["out"].splitlines(), single[1].splitlines()
    assert len(lines) == len(single_lines) == 3 and lines[:2] == single_lines[:2]  # the two predictions
    assert lines[2].startswith("perplexity ") and rank0["err"] == ""
    assert sorted(p.name for p in two.iterdir()) == ["metrics.csv", "ppl.png", "run.ckpt"]  # no temp files left


def test_random_iterator_splits_the_same_way(tmp_path):
    args = [*ARGS, "--max-tokens", "600", "--random-iter"]
    two = cli_on_ranks([*args, "--metrics-csv", str(tmp_path / "two.csv")], tmp_path / "ranks")
    assert [r["code"] for r in two] == [0, 0], [r["err"] for r in two]
    assert cli_one_process([*args, "--metrics-csv", str(tmp_path / "one.csv")])[0] == 0
    assert_same_run(tmp_path / "two.csv", None, tmp_path / "one.csv", None)


# -- the gradient clipping sees the global gradient ----------------------------------------------
def test_ddp_gradients_are_the_global_mean_gradient_on_every_rank(tmp_path):
    """After DDP's backward every rank holds the same gradients, the one-process gradient of the
    global mean loss, so clip_gradients' local norm is the global norm (train.py relies on it)."""
    gen = torch.Generator().manual_seed(1)
    X, Y = torch.randint(0, 28, (8, 6), generator=gen), torch.randint(0, 28, (8, 6), generator=gen)

    def step(model, X, Y, forward):
        F.cross_entropy(forward(X, model.begin_state(X.shape[0], "cpu"))[0], Y.T.reshape(-1)).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        return grads, clip_gradients(model, 0.01), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    def target():
        device = distributed.init_from_env("cpu")
        model = build_char_lm("nn", 28, 16, seed=2)
        rows = next(distributed.shard_rows([(X, Y)], distributed.rank(), distributed.world_size()))
        torch.save(step(model, *rows, distributed.wrap(model, device)), tmp_path / f"grads{distributed.rank()}.pt")
        distributed.teardown()
        return 0

    assert [r[0] for r in run_ranks(target, tmp_path)] == [0, 0]
    model = build_char_lm("nn", 28, 16, seed=2)
    ref_grads, ref_norm, ref_clipped = step(model, X, Y, model)
    ranks = [torch.load(tmp_path / f"grads{r}.pt") for r in range(WORLD)]
    for grads, norm, clipped in ranks:
        assert all(torch.equal(g, g0) for g, g0 in zip(grads, ranks[0][0]))  # bit-identical on every rank
        assert torch.equal(norm, ranks[0][1])
        assert max(rel_err(g, r) for g, r in zip(grads, ref_grads)) <= 1e-6
        assert float(norm) == pytest.approx(float(ref_norm), rel=1e-6) and float(norm) > 0.01  # it clipped
        assert max(rel_err(g, r) for g, r in zip(clipped, ref_clipped)) <= 1e-6


# -- (c) a batch that does not split ---------------------------------------------------------------
def test_batch_size_not_divisible_by_the_world_size_is_refused_on_every_rank(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    files = ["--save", str(out / "run.ckpt"), "--metrics-csv", str(out / "m.csv")]
    ranks = cli_on_ranks([*ARGS, "--batch-size", "3", *files], tmp_path / "ranks", late_rank=0)
    assert [r["code"] for r in ranks] == [2, 2]
    assert ranks[1]["done"] >= ranks[0]["start"]  # rank 1 waited for rank 0 (torchrun would stop a late rank 0)
    err0 = ranks[0]["err"].strip().splitlines()
    assert len(err0) == 1 and err0[0].startswith("lstm-triton train: error: argument --batch-size: batch_size 3 "
                                                 "does not split evenly over the 2 processes"), err0
    assert ranks[1]["err"] == ranks[1]["out"] == ranks[0]["out"] == "" and list(out.iterdir()) == []


def test_shard_rows_partitions_each_batch_and_a_library_trainer_refuses_an_uneven_split():
    X, Y = torch.arange(24).reshape(6, 4), torch.arange(24).reshape(6, 4) + 1
    shards = [next(distributed.shard_rows([(X, Y)], r, 3)) for r in range(3)]
    assert torch.equal(torch.cat([x for x, _ in shards]), X) and torch.equal(torch.cat([y for _, y in shards]), Y)
    assert [tuple(x.shape) for x, _ in shards] == [(2, 4)] * 3
    with pytest.raises(ValueError, match="batch_size 6 does not split evenly over the 4 processes"):
        distributed.check_batch_split(6, 4)
    assert not distributed.is_distributed() and distributed.init_from_env("auto") == "auto"  # no torchrun here


# -- (b) torchrun: killed mid-epoch, resumed ---------------------------------------------------------
def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (torchrun's workers), from /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie has exited
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


@contextlib.contextmanager
def torchrun(entry: list[str], argv: list[str], log: Path):
    """``torchrun --nproc-per-node 2 <entry> train <argv>`` in a session of its own, stdout and stderr
    to ``log``.out/.err; on leaving, the launcher and its workers are killed if still running."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
           *entry, "train", *argv]  # --standalone: the rendezvous takes a free port itself
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        launcher = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)
    try:
        yield launcher
    finally:  # never leave a process behind, whatever failed (a hung collective, say)
        workers = _children(launcher.pid) if launcher.poll() is None else []
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers in /proc")
def test_torchrun_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path, two_and_one):
    ckpt, csv = tmp_path / "run.ckpt", tmp_path / "metrics.csv"
    with torchrun(["-m", "lstm_triton"], [*ARGS, "--save", str(ckpt)], tmp_path / "killed") as killed:
        deadline = time.monotonic() + TIMEOUT
        while not ckpt.exists():  # epoch 1's checkpoint: epoch 2 starts as soon as it is written
            assert killed.poll() is None, (tmp_path / "killed.err").read_text()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.005)
        workers = _children(killed.pid)
        first_epoch = torch.load(ckpt, weights_only=False)["history"][0]["seconds"]
        time.sleep(first_epoch / 4)  # into epoch 2's training
        os.killpg(killed.pid, signal.SIGTERM)  # torchrun's group; torchrun terminates its workers
        killed.wait(TIMEOUT)
    assert len(workers) == WORLD and not any(_alive(w) for w in workers)
    assert killed.returncode != 0 and (tmp_path / "killed.out").read_text() == ""
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1, "the kill came after epoch 2 ended"

    script = Path(sys.executable).with_name("lstm-triton")
    assert script.exists(), f"{script}: the console script (pip install -e .)"
    argv = [*ARGS, "--resume", str(ckpt), "--metrics-csv", str(csv)]
    with torchrun([str(script)], argv, tmp_path / "resumed") as resumed:
        assert resumed.wait(TIMEOUT) == 0, (tmp_path / "resumed.err").read_text()[-2000:]
    lines = (tmp_path / "resumed.out").read_text().splitlines()
    assert len(lines) == 3 and lines[2].startswith("perplexity "), lines  # rank 0 alone prints
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix not in (".out", ".err")) == [
        "metrics.csv", "run.ckpt"]  # no temp files left by either run
    (straight, _) = two_and_one["two"]
    assert_same_run(csv, ckpt, straight / "metrics.csv", straight / "run.ckpt")
