"""Test set-up: without a GPU, Triton kernels run under the interpreter on CPU tensors.

TRITON_INTERPRET must be set before any @triton.jit function is created, i.e. before the kernels
are imported, so it is set here, at collection time, unless the caller chose otherwise.
"""

import os

import pytest
import torch

from .precision_flags import fp32_precision

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# make test runs one pytest-xdist worker per core: each worker gets its share of the cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

# The files that take longest under the interpreter, heaviest first (CPU-seconds of a 2-core make test,
# cold Triton cache, 2026-12-05, main run / Triton 3.6 leg: bench_report 213/-, aot_compile 85/46,
# gru_rnn 75/41, barrier_recovery 40/38, persistent_multiprogram 70/38, lstm_triton 131/23, then
# main-run-only files of 40-72; every other file under 30). pytest-xdist (--dist loadfile
# --no-loadscope-reorder) hands files out in collection order, so starting these first leaves only
# short files for the end: no minutes where one worker finishes a long file while the other idles
# (longest-processing-time-first scheduling). One order serves both legs: the files the Triton 3.6
# leg runs come first in its own order of cost.
HEAVIEST_FIRST = ("test_bench_report.py", "test_aot_compile.py", "test_gru_rnn.py", "test_barrier_recovery.py",
                  "test_persistent_multiprogram.py", "test_lstm_triton.py", "test_nn_conformance.py",
                  "test_tooling.py", "test_train_triton.py", "test_autocast.py", "test_ddp.py",
                  "test_aot_compile_amd.py", "test_no_host_sync.py", "test_packed.py")


def pytest_collection_modifyitems(items):
    """Heaviest files first (:data:`HEAVIEST_FIRST`), each file's tests in their own order."""
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def seeded_rng():
    """Every test starts from the same global RNG state, whichever xdist worker runs it and
    whatever ran before it there: an unseeded torch.randn in a test is reproducible."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def ieee_fp32_on_cuda():
    """On CUDA, fp32 runs with TF32 by default in nn.LSTM (cuDNN) and so in our kernels, which
    follow it (~1e-3 relative): tests that hold fp32 to 1e-5 need IEEE, set here for every test
    (tests of the TF32 default set their own switch inside). Under the interpreter fp32 dots are
    exact whatever the switch, so nothing changes there."""
    if not torch.cuda.is_available():
        yield
        return
    with fp32_precision("ieee"):
        yield


@pytest.fixture(params=["gpu-tiles", "interpreter-tiles"] if not torch.cuda.is_available() else ["gpu-tiles"])
def tiles(request):
    """Under the interpreter, run both the GPU's tile sizes and the interpreter's wide tiles."""
    from lstm_triton.kernels.launch_config import use_gpu_tiles  # imported late: after TRITON_INTERPRET is set

    use_gpu_tiles(request.param == "gpu-tiles")
    yield request.param
    use_gpu_tiles(False)


@pytest.fixture
def poisoned():
    """Every kernel output starts as NaN, so an element a kernel forgets to write fails."""
    from lstm_triton.kernels.buffers import set_poison

    set_poison(True)
    yield
    set_poison(False)


@pytest.fixture(autouse=True)
def no_barrier_timeouts(request, monkeypatch):
    """The persistent level repairs a timed-out grid barrier on the device (the rescue kernel
    recomputes the call at the step level), so a parity test could pass on the rescue's results.
    Every test runs with the host check on (a free read on the CPU) and fails if a barrier timed
    out, unless it is marked ``barrier_timeout`` (it forces one)."""
    from lstm_triton.kernels import lstm_persistent

    monkeypatch.setattr(lstm_persistent, "CHECK_BARRIER_ON_HOST", True)
    before = lstm_persistent.barrier_timeouts
    yield
    if request.node.get_closest_marker("barrier_timeout") is None:
        assert lstm_persistent.barrier_timeouts == before, "a persistent grid barrier timed out (rescued)"
