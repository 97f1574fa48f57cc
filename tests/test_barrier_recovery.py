"""A persistent launch that cannot have its whole grid resident still gives nn's results.

Two ways a persistent call fails on a GPU, each forced here on the CPU:
* the driver refuses the cooperative launch (``too many blocks in cooperative launch``): the call
  runs the step level instead, with a logged reason, and later calls of that grid size go there
  directly;
* a grid barrier runs out of spins (programs not co-resident): the kernel flags it, the rescue
  kernel launched after it recomputes the call at the step level on the device (no host read), and
  the host check (LSTM_TRITON_CHECK_BARRIER=1, on in the tests) logs and counts it.
The spin budget is per barrier: a long sequence does not shrink it.
"""

import logging

import pytest
import torch
import triton
import triton.language as tl

from lstm_triton.kernels import launch_config, lstm_persistent
from lstm_triton.kernels.buffers import set_poison
from lstm_triton.kernels.launch_config import use_gpu_tiles
from lstm_triton.kernels.lstm_persistent import grid_barrier

from .helpers import DEVICE, assert_close, compare_with_nn
from .multiprogram import concurrent_programs

pytestmark = pytest.mark.skipif(DEVICE != "cpu", reason="forces failures through the interpreter (CPU only)")

CELLS = ["LSTM", "GRU", "RNN_TANH"]


@pytest.fixture
def gpu_grid(monkeypatch):
    """The GPU's tiles and grid (H=40: 3 programs) with every kernel output NaN until written."""
    set_poison(True)
    use_gpu_tiles(True)
    yield
    use_gpu_tiles(False)
    set_poison(False)


@pytest.mark.barrier_timeout
@pytest.mark.parametrize("cell", CELLS)
def test_programs_that_are_never_co_resident_are_rescued(cell, gpu_grid, monkeypatch, caplog):
    """The launcher believes its 3 programs are co-resident, but the interpreter runs them one after
    another: program 0 spends its budget at the first barrier, the flag is set, the rescue kernels
    recompute forward and backward; parity with float64 nn holds for output, state and every grad."""
    monkeypatch.setattr(launch_config, "_concurrent_programs_under_interpreter", True)
    monkeypatch.setattr(lstm_persistent, "MAX_SPINS", 16)
    before = lstm_persistent.barrier_timeouts
    with caplog.at_level(logging.WARNING, logger="lstm_triton"):
        errors = compare_with_nn("persistent", 5, 3, 4, 40, cell=cell, seed=1)
    assert_close(errors)
    assert lstm_persistent.barrier_timeouts == before + 2  # the forward and the backward launch
    assert caplog.text.count("recomputed at the step level") == 2


@pytest.mark.barrier_timeout
@pytest.mark.parametrize("seed", [0, 1])
def test_a_tiny_budget_under_the_harness_still_matches_nn(seed, gpu_grid, monkeypatch):
    """Co-resident programs (the harness) with 1 poll per barrier: some time out, some do not; the
    results are the rescue's where a launch timed out, the persistent kernel's elsewhere."""
    monkeypatch.setattr(lstm_persistent, "MAX_SPINS", 1)
    before = lstm_persistent.barrier_timeouts
    with concurrent_programs(seed):
        assert_close(compare_with_nn("persistent", 6, 17, 4, 40, seed=seed))
    assert lstm_persistent.barrier_timeouts > before


class _RefusingKernel:
    """A persistent kernel whose launch the driver refuses, as Triton's launcher reports it."""

    def __init__(self):
        self.attempts = 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.attempts += 1
            raise RuntimeError("Triton Error [CUDA]: too many blocks in cooperative launch")

        return launch


@pytest.mark.parametrize("cell", CELLS)
def test_a_refused_cooperative_launch_runs_the_step_level(cell, gpu_grid, monkeypatch, caplog):
    monkeypatch.setattr(launch_config, "_concurrent_programs_under_interpreter", True)
    monkeypatch.setattr(lstm_persistent, "_refused_programs", {})
    forward, backward = _RefusingKernel(), _RefusingKernel()
    monkeypatch.setattr(lstm_persistent, "persistent_forward_kernel", forward)
    monkeypatch.setattr(lstm_persistent, "persistent_backward_kernel", backward)
    with caplog.at_level(logging.DEBUG, logger="lstm_triton"):
        assert_close(compare_with_nn("persistent", 5, 3, 4, 40, cell=cell, seed=2))
        assert "refused a cooperative launch of 3 programs" in caplog.text
        assert (forward.attempts, backward.attempts) == (1, 0)  # the backward knew the grid was refused
        assert_close(compare_with_nn("persistent", 4, 2, 4, 40, cell=cell, seed=3))
    assert (forward.attempts, backward.attempts) == (1, 0)  # not tried again
    assert "were refused before; running the step level" in caplog.text


def test_another_launch_error_is_not_mistaken_for_a_refusal(gpu_grid, monkeypatch):
    class Broken:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise RuntimeError("Triton Error [CUDA]: an illegal memory access was encountered")
            return launch

    monkeypatch.setattr(launch_config, "_concurrent_programs_under_interpreter", True)
    monkeypatch.setattr(lstm_persistent, "_refused_programs", {})
    monkeypatch.setattr(lstm_persistent, "persistent_forward_kernel", Broken())
    with pytest.raises(RuntimeError, match="illegal memory access"):
        compare_with_nn("persistent", 3, 2, 4, 40)


# ----------------------------------------------------------------------------- the budget is per barrier

@triton.jit
def barrier_with_one_budget_per_launch(counter_ptr, target, flag_ptr, budget, MAX_SPINS: tl.constexpr):
    """The old barrier (negative control): one budget for the whole launch, carried from barrier to
    barrier (``budget`` plays ``waiting``'s part), so every barrier's polls use it up."""
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
    arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    while (arrived < target) & (budget > 0):
        arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
        budget -= 1
    if arrived < target:
        tl.store(flag_ptr, 1)
    return budget


@triton.jit
def many_barriers_kernel(counter_ptr, flag_ptr, work_ptr, T, SPINS: tl.constexpr, PER_LAUNCH: tl.constexpr):
    """T barriers; before each, program 0 works (4 atomics, each a hand-over under the harness)
    while the others already wait: they poll ~4 times per barrier."""
    n = tl.num_programs(0)
    waiting = tl.full([], 1, tl.int32)
    budget = tl.full([], SPINS, tl.int32)
    for t in range(T):
        if tl.program_id(0) == 0:
            for _ in range(4):
                tl.atomic_add(work_ptr, 1)
        if PER_LAUNCH:
            budget = barrier_with_one_budget_per_launch(counter_ptr, (t + 1) * n, flag_ptr, budget, SPINS)
        else:
            waiting = grid_barrier(counter_ptr, (t + 1) * n, flag_ptr, waiting, SPINS)


@pytest.mark.parametrize("per_launch", [False, True], ids=["per-barrier", "per-launch-negative-control"])
def test_a_long_sequence_does_not_use_up_the_spin_budget(per_launch):
    """Three co-resident programs (round-robin hand-over at atomics), 60 barriers, each costing the
    waiting programs a few polls: 8 polls per barrier never run out; 8 for the whole launch do."""
    sync = torch.zeros(3, dtype=torch.int32)  # counter, flag, program 0's work
    with concurrent_programs(None):
        many_barriers_kernel[(3,)](sync[0:], sync[1:], sync[2:], 60, SPINS=8, PER_LAUNCH=per_launch)
    assert int(sync[0]) == 3 * 60  # every program arrived at every barrier
    assert int(sync[1]) == (1 if per_launch else 0)
