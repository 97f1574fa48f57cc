"""The multi-program harness itself (tests/multiprogram.py): toy kernels, CPU interpreter only.

Each test here would fail with the interpreter's own one-after-another grid loop (or with a
harness that forgot the program index, the shared buffers, an error or a hang).
"""

import pytest
import torch
import triton
import triton.language as tl

from lstm_triton.kernels import launch_config
from lstm_triton.kernels.lstm_persistent import grid_barrier

from .helpers import DEVICE
from .multiprogram import GridTimeout, concurrent_programs

pytestmark = pytest.mark.skipif(DEVICE != "cpu", reason="the harness drives the Triton interpreter (CPU only)")

SPINS = 1 << 20  # barrier polls before a program gives up: far more than a correct run needs


@triton.jit
def _linear_pid():
    return (tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)) * tl.num_programs(2) + tl.program_id(2)


@triton.jit
def ring_kernel(buf_ptr, ids_ptr, counter_ptr, flag_ptr, T, SPINS: tl.constexpr):
    """Programs in a ring: T times, each reads its right neighbour's value (after a barrier), then
    (after another barrier) stores it + 1. Programs must be concurrent: a barrier waits for all."""
    n = tl.num_programs(0) * tl.num_programs(1) * tl.num_programs(2)
    pid = _linear_pid()
    waiting = tl.full([], 1, tl.int32)
    tl.store(buf_ptr + pid, pid.to(tl.float32))
    for t in range(T):
        waiting = grid_barrier(counter_ptr, (2 * t + 1) * n, flag_ptr, waiting, SPINS)
        right = tl.load(buf_ptr + (pid + 1) % n)
        waiting = grid_barrier(counter_ptr, (2 * t + 2) * n, flag_ptr, waiting, SPINS)
        tl.store(buf_ptr + pid, right + 1)
    # the index read again after many hand-overs: each thread must have its own restored
    tl.store(ids_ptr + pid * 3 + tl.arange(0, 4), tl.where(tl.arange(0, 4) == 0, tl.program_id(0),
             tl.where(tl.arange(0, 4) == 1, tl.program_id(1), tl.program_id(2))), mask=tl.arange(0, 4) < 3)


def run_ring(grid, T, seed=None, **harness_kwargs):
    n = grid[0] * (grid[1] if len(grid) > 1 else 1) * (grid[2] if len(grid) > 2 else 1)
    buf, ids = torch.full((n,), float("nan")), torch.full((n, 3), -1, dtype=torch.int32)
    sync = torch.zeros(2, dtype=torch.int32)  # [counter, flag]: two views of one storage
    with concurrent_programs(seed, **harness_kwargs) as harness:
        ring_kernel[grid](buf, ids, sync[0:], sync[1:], T, SPINS=SPINS)
    return buf, ids, sync, harness


@pytest.mark.parametrize("seed", [None, 0, 1], ids=["round-robin", "seed0", "seed1"])
@pytest.mark.parametrize("grid", [(5,), (2, 3), (2, 1, 3)], ids=["1d", "2d", "3d"])
def test_programs_meet_at_barriers_and_keep_their_own_index(grid, seed):
    T = 4
    buf, ids, sync, harness = run_ring(grid, T, seed)
    n = buf.numel()
    pid = torch.arange(n)
    assert torch.equal(buf, ((pid + T) % n + T).float())  # every exchange saw every neighbour's last value
    full = tuple(grid) + (1,) * (3 - len(grid))
    expected_ids = torch.stack(torch.meshgrid(*(torch.arange(d) for d in full), indexing="ij"), -1).reshape(n, 3)
    assert torch.equal(ids, expected_ids.int())
    assert sync.tolist() == [2 * T * n, 0]  # every arrival counted in the shared buffer, no timeout
    (launch,) = harness.launches
    assert (launch.kernel, launch.grid, launch.programs_finished) == ("ring_kernel", full, n)


def test_the_seed_fixes_the_schedule_and_loads_and_stores_add_handovers():
    def handovers(seed, **kwargs):
        (launch,) = run_ring((3,), 3, seed, **kwargs)[3].launches
        return launch.atomic_handovers, launch.memory_handovers

    assert handovers(7) == handovers(7)  # reproducible from the seed
    assert handovers(7) != handovers(8)
    assert handovers(None)[1] == 0  # round-robin: atomics only
    rare, some, often = (handovers(7, switch_probability=p)[1] for p in (0.0, 0.25, 1.0))
    assert rare == 0 < some < often  # loads/stores hand over with the given probability


def test_outside_the_context_the_interpreter_runs_programs_one_after_another():
    """The same ring without the harness: the first program's barrier never fills (flag set)."""
    buf, sync = torch.zeros(3), torch.zeros(2, dtype=torch.int32)
    ids = torch.zeros(3, 3, dtype=torch.int32)
    ring_kernel[(3,)](buf, ids, sync[0:], sync[1:], 2, SPINS=5)
    assert int(sync[1]) == 1


@triton.jit
def failing_kernel(counter_ptr, flag_ptr, out_ptr):
    """Program 1 hits an operation the interpreter rejects while the others wait at a barrier."""
    if tl.program_id(0) == 1:
        x = tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [tl.program_id(0)], dtype=tl.int32,
                                      is_pure=True, pack=1)
        tl.store(out_ptr, x)
    waiting = grid_barrier(counter_ptr, tl.num_programs(0), flag_ptr, tl.full([], 1, tl.int32), SPINS)
    tl.store(out_ptr + 1 + tl.program_id(0), waiting)


def test_an_error_in_one_program_reaches_the_caller_and_stops_the_others():
    sync, out = torch.zeros(2, dtype=torch.int32), torch.full((4,), -1, dtype=torch.int32)
    with concurrent_programs(0, timeout_s=60) as harness:
        with pytest.raises(triton.runtime.interpreter.InterpreterError, match="inline_asm not supported"):
            failing_kernel[(3,)](sync[0:], sync[1:], out)
    (launch,) = harness.launches
    assert launch.programs_finished == 0  # the waiting programs were aborted, not left spinning
    assert int(sync[1]) == 0  # and none of them ran out its spin budget


@triton.jit
def never_satisfied_kernel(counter_ptr, flag_ptr):
    grid_barrier(counter_ptr, tl.num_programs(0) + 1, flag_ptr, tl.full([], 1, tl.int32), SPINS * 1024)


def test_a_barrier_that_never_fills_times_out_instead_of_hanging():
    sync = torch.zeros(2, dtype=torch.int32)
    with concurrent_programs(None, timeout_s=0.5):
        with pytest.raises(triton.runtime.interpreter.InterpreterError, match="did not finish within 0.5 s") as err:
            never_satisfied_kernel[(2,)](sync[0:], sync[1:])
    assert isinstance(err.value.__cause__, GridTimeout)


def test_everything_is_restored_on_exit_even_after_an_error():
    from triton.runtime import interpreter

    call, builder = interpreter.GridExecutor.__call__, interpreter.interpreter_builder
    with pytest.raises(KeyError):
        with concurrent_programs(3):
            assert interpreter.GridExecutor.__call__ is not call
            assert "create_atomic_rmw" in vars(builder) and "create_masked_load" in vars(builder)
            assert launch_config._concurrent_programs_under_interpreter
            raise KeyError("inside")
    assert interpreter.GridExecutor.__call__ is call
    assert not any(name.startswith("create_") for name in vars(builder))
    assert not launch_config._concurrent_programs_under_interpreter


@pytest.mark.parametrize("kwargs, message", [
    (dict(switch_probability=1.5), "switch_probability"), (dict(timeout_s=0), "timeout_s"), (dict(seed=0.5), "seed"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        with concurrent_programs(**kwargs):
            pass


def test_nesting_is_refused():
    with concurrent_programs():
        with pytest.raises(RuntimeError, match="already active"):
            with concurrent_programs():
                pass
