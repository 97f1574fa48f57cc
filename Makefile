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
# The oldest Triton the project supports (pyproject: triton>=3.6; the GPU image runs 3.6): make test
# runs the kernel tests a second time with that release and the same torch, so the declared range is
# tested at both ends (the main venv takes the newest Triton). The release lies in a folder of its own
# put ahead of the venv's site-packages on PYTHONPATH (Triton needs nothing else at run time): one
# wheel unpacked, instead of a copy of the 2.3 GB venv and a reinstall (~50 s of set-up).
TRITON_OLDEST ?= 3.6.0
TRITON_OLDEST_DIR ?= .triton-oldest
STAMP_OLDEST := $(TRITON_OLDEST_DIR)/.installed-$(TRITON_OLDEST)
WITH_OLDEST := PYTHONPATH=$(abspath $(TRITON_OLDEST_DIR))$${PYTHONPATH:+:$$PYTHONPATH}
# What a Triton release can change: parity of every kernel (level, cell, forward and backward) on
# the GPU's tiles, the multi-program harness and the persistent grid under it, packed input,
# projection, barrier recovery, the interpreter differences (compat) and the AOT compile of the
# d2l/large builds. Left to the newest Triton's run: the interpreter's wide tiles, and the tests of
# module features, hypothesis shapes, torch.compile/func and the barrier negative controls, which
# exercise the PyTorch side or repeat the same kernels, and the longest runs of kernels the leg
# already covers at smaller sizes (H=300 and H=1030 interpreted): 10 min of CPU less.
KERNEL_TESTS := tests/test_compat.py tests/test_multiprogram.py tests/test_lstm_triton.py tests/test_gru_rnn.py \
	tests/test_persistent_multiprogram.py tests/test_packed.py tests/test_projection.py \
	tests/test_barrier_recovery.py tests/test_aot_compile.py
KERNEL_TESTS_SKIP := interpreter-tiles or module_features or module_variants or random_shapes or compiles_in_one_graph \
	or gradient_of_a_gradient or torch_func or a_broken_barrier or long_sequences or falls_back_to_step \
	or H300-several-wide-tiles

.PHONY: test test-oldest bench lint setup clean

setup: $(STAMP)

# pip compiles every installed module to bytecode on one core (~30 s for torch alone); compileall
# does the same on every core. (Without bytecode every process would compile what it imports, and
# PYTHONDONTWRITEBYTECODE=1 would keep it from being saved.) Its status is ignored: a few files
# shipped inside packages are not Python 3 (pip skips them too).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --no-compile -e ".[dev]"
	$(PY) -m compileall -qq -j 0 $(VENV)/lib || true
	touch $(STAMP)

$(STAMP_OLDEST): $(STAMP)
	rm -rf $(TRITON_OLDEST_DIR)
	$(PY) -m pip install --quiet --no-compile --no-deps --target $(TRITON_OLDEST_DIR) "triton==$(TRITON_OLDEST)"
	$(PY) -m compileall -qq -j 0 $(TRITON_OLDEST_DIR) || true
	$(WITH_OLDEST) $(PY) -c "import triton; assert triton.__version__ == '$(TRITON_OLDEST)', triton.__file__"
	touch $(STAMP_OLDEST)

# The benchmark suite runs once inside the tests, at the tiny profile, through make bench's own
# entry point (tests/test_bench_report.py), so it cannot rot. The tests run on pytest-xdist workers,
# one per core (TEST_WORKERS=0: in this process), a whole file to a worker (--dist loadfile): the
# module fixtures that compile every kernel (test_aot_compile) or run the tiny bench
# (test_bench_report) then run once. Files go out in collection order (--no-loadscope-reorder, not
# largest first), so test_aot_compile, the longest single file on a cold Triton cache, starts first
# instead of last. (xdist_group/loadgroup would group finer, but it silently stopped grouping with
# pytest 9.2: pytest-dev/pytest-xdist#1386.)
TEST_WORKERS ?= auto
TEST_OLDEST = $(WITH_OLDEST) LSTM_TRITON_AOT=rated $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile \
	--no-loadscope-reorder -k "not ($(KERNEL_TESTS_SKIP))" $(KERNEL_TESTS)
# The Triton 3.6 leg runs after the main run, not beside it: tried side by side (2026-12-05), make
# test took 18:18 against 16:02 one after the other an hour before; the tests' CPU time grew 17-24%
# with four busy processes on two cores, the machine itself being ~12% slower that hour.
test: $(STAMP) $(STAMP_OLDEST)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
	$(TEST_OLDEST)

test-oldest: $(STAMP_OLDEST)
	$(TEST_OLDEST)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m bench.run --out results $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TRITON_OLDEST_DIR) results .pytest_cache .benchmarks *.egg-info
