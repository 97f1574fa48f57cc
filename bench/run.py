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
import shutil
import sys
import time
from pathlib import Path

import pytest

from bench.report import build_reports

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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "benchmark.json"
    pytest_args = [str(BENCH_DIR), "--benchmark-only", f"--bench-profile={args.profile}",
                   f"--benchmark-json={json_path}", "--benchmark-save-data", "--benchmark-columns=median,rounds",
                   "-p", "no:cacheprovider", "-v", "-rs", "-s", *extra]  # -v: one line per benchmark with % done
    if args.providers:
        pytest_args.append(f"--bench-providers={args.providers}")
    if args.cells:
        pytest_args.append(f"--bench-cells={args.cells}")
    start = time.perf_counter()
    status = pytest.main(pytest_args)
    print(f"benchmarks took {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if not json_path.exists():
        print(f"bench: pytest wrote no {json_path} (exit {int(status)})", file=sys.stderr)
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
