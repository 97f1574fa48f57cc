"""``make bench``: run the benchmark suite, then build the reports.

    python -m bench.run [--out results] [--profile auto|gpu|cpu|tiny] [--providers nn,triton-step]
                        [--cells lstm,gru,rnn] [--publish docs/results/cpu]
    make bench BENCH_ARGS="--publish docs/results/cpu"     # the same through make

Runs ``pytest bench --benchmark-only`` with the chosen profile (auto: gpu with CUDA, else cpu),
saves pytest-benchmark's JSON as ``OUT/benchmark.json``, then writes ``OUT/results.csv``, the PNG
plots and ``OUT/summary.md``. ``--publish DIR`` then copies the reports (not the raw JSON, which
holds host details) to DIR, e.g. the ``docs/results/cpu/`` that README.md links to; commit them
from there. Exits with pytest's status, after writing whatever was measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # as bench/conftest.py does: before any kernel is imported

from bench.report import build_reports  # noqa: E402
from bench.selection import SelectionError, resolve  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent


def publish(paths: dict[str, Path], dest: str | Path) -> list[Path]:
    """Copy the report files in ``paths`` (build_reports' result) into ``dest``; return the copies."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(path, dest / path.name)) for path in paths.values()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results")
    parser.add_argument("--profile", default="auto", choices=("auto", "gpu", "cpu", "tiny"))
    parser.add_argument("--providers", default=None, help="comma-separated subset of the providers")
    parser.add_argument("--cells", default=None,
                        help="comma-separated cells: lstm, gru, rnn (tanh), rnn_relu "
                             "(default: the profile's, lstm,gru,rnn)")
    parser.add_argument("--publish", default=None, metavar="DIR",
                        help="also copy the reports (CSV, plots, summary.md) to DIR, e.g. docs/results/cpu")
    args, extra = parser.parse_known_args(argv)
    try:
        resolve(args.profile, args.cells, args.providers)  # a bad choice: one line and exit 2, before pytest
    except SelectionError as err:
        parser.error(str(err))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "benchmark.json"
    pytest_args = [str(BENCH_DIR), "--benchmark-only", f"--bench-profile={args.profile}",
                   f"--benchmark-json={json_path}", "--benchmark-save-data", "--benchmark-columns=median,rounds",
                   "-p", "no:cacheprovider", "-v", "-rs", "-s", *extra]  # -v: one line per benchmark with % done
    if args.providers is not None:
        pytest_args.append(f"--bench-providers={args.providers}")
    if args.cells is not None:
        pytest_args.append(f"--bench-cells={args.cells}")
    start = time.perf_counter()
    status = pytest.main(pytest_args)
    print(f"benchmarks took {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if not json_path.exists():  # pytest-benchmark writes no JSON when no benchmark ran
        why = ("nothing was measured: every selected case was skipped (pytest's SKIPPED lines above say why)"
               if int(status) == 0 else f"pytest exited with {int(status)} before any benchmark ran")
        print(f"bench: no report: {why}", file=sys.stderr)
        return int(status) or 1
    paths = build_reports(json_path, out)
    print(paths["summary"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if args.publish:
        copies = publish(paths, args.publish)
        print(f"published {len(copies)} files to {args.publish} (commit them with `git add {args.publish}`)")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
