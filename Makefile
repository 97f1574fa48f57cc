# Two entry points, each bootstrapping .venv on a fresh clone:
#   make test    set up + the correctness tests (CPU; Triton kernels run under TRITON_INTERPRET=1)
#   make bench   set up + the benchmark comparison, reports written to results/
#                (BENCH_ARGS="--publish docs/results/cpu" also copies them where README.md links)
# TORCH_SPEC picks the torch wheel: the default takes the CPU build this project's machines carry;
# on a GPU machine use e.g. `make test TORCH_SPEC=torch` (any torch >= 2.11 works).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BENCH_ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test bench lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The benchmark suite runs once inside the tests, at the tiny profile, through make bench's own
# entry point (tests/test_bench_report.py), so it cannot rot. The tests run on pytest-xdist workers,
# one per core (TEST_WORKERS=0: in this process), a whole file to a worker (--dist loadfile): the
# module fixtures that compile every kernel (test_aot_compile) or run the tiny bench
# (test_bench_report) then run once. Files go out in collection order (--no-loadscope-reorder, not
# largest first), so test_aot_compile, the longest single file on a cold Triton cache, starts first
# instead of last. (xdist_group/loadgroup would group finer, but it silently stopped grouping with
# pytest 9.2: pytest-dev/pytest-xdist#1386.)
TEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m bench.run --out results $(BENCH_ARGS)

clean:
	rm -rf $(VENV) results .pytest_cache .benchmarks *.egg-info
