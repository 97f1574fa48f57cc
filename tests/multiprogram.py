"""Run an interpreted Triton grid's programs as co-resident threads (a test harness).

Why: under ``TRITON_INTERPRET=1`` Triton runs a grid's programs one after another (the loop in
``triton.runtime.interpreter.GridExecutor.__call__``), so a kernel whose programs wait for each
other — the persistent LSTM level, whose programs meet at a grid barrier every time step — can
only run there as one program. Inside :func:`concurrent_programs` every interpreted grid instead
runs each program as its own thread, **exactly one running at a time** (a baton handed from
thread to thread), so a run is deterministic for a given schedule:

* at every atomic operation (``atomic_add``/``cas``/``xchg``…, atomic load/store/poll) the running
  program hands the baton over *before* the operation: a program spinning at a barrier lets the
  others reach it, as co-resident programs on a GPU do;
* with ``seed=None`` the next program is the next one round-robin and atomics are the only
  hand-over points (a lock-step schedule);
* with an integer ``seed`` (``random.Random(seed)``; the schedule is reproducible from it) the next
  program is drawn at random, and the running program also hands over before a load or a store
  with probability ``switch_probability``. A program overtaken there is *parked*: it sits out a
  random 1 … ``park`` × (other programs) further hand-overs, one parked program at a time, while
  the others run ahead (they are picked while it is parked; when they only spin, the spins count
  down its parking). Such a straggler caught between loading h and storing its slice is what
  exposes a barrier that lets the others through too early. Measured on the persistent forward
  kernel with its barrier target one arrival short: without parking (a straggler is picked again
  at the next atomic half the time with 3 programs) 18 of 30 seeds missed the fault at H=40, T=4;
  with ``park=16`` none of 40 (H=40, T=4), 1 of 40 at T=3, 1 of 30 at H=300 (19 programs), T=4.
  The round-robin schedule missed it at H=40 (programs advance in lock-step).

What it models: co-resident programs whose memory operations interleave at the granularity of one
Triton memory operation (a whole tile load or store is atomic with respect to other programs),
under sequential consistency. What it does not model: weaker memory ordering (a store becoming
visible late, stale L1 lines, reordering around ``sem="relaxed"`` atomics, missing fences or
``.cg`` cache modifiers), warps inside a program, or programs that are *not* co-resident (every
program here is always able to run). Those need a GPU (bench/gpu_check.sh).

How: ``GridExecutor.__call__`` is wrapped so that it keeps doing everything it does (copy the
arguments to the host, patch ``triton.language``, convert arguments, copy results back) but its
per-program calls only *collect* the grid indices; once the last index is collected the programs
run as threads on the same converted arguments. For CPU tensors ``_init_args_hst`` keeps the
caller's storages (``storage.cpu()`` of a CPU storage is that storage, deduplicated by storage
pointer, so views like ``sync[0:]``/``sync[1:]`` share one buffer), and every thread receives the
same argument objects: all programs read and write the same host buffers. The interpreter keeps
the current program index in one global (``interpreter_builder.grid_idx``); each thread restores
its own index whenever it takes the baton. The hand-over points are the instance methods
``interpreter_builder.create_masked_load/create_masked_store/create_atomic_*`` (plain loads and
stores, descriptor loads and stores go through the masked ones).

Failures: an exception in any program aborts the others (they unwind at their next hand-over
point) and propagates to the launch, wrapped by the interpreter as for a sequential grid
(``InterpreterError``). A grid that does not finish within ``timeout_s`` (every program spinning
at a barrier that is never satisfied, or a program that never hands over) raises
:class:`GridTimeout` (wrapped in ``InterpreterError`` like any error of a launch) instead of
hanging; a program stuck without reaching a hand-over point
cannot be stopped (its thread is a daemon and is abandoned).

Under CUDA (``TRITON_INTERPRET`` unset) the context manager changes nothing: real programs run
concurrently there. Not thread-safe itself: launch kernels from one thread, one grid at a time.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from lstm_triton.kernels import launch_config

DEFAULT_TIMEOUT_S = 300.0
_ATOMICS = ("create_atomic_rmw", "create_atomic_cas", "create_atomic_load", "create_atomic_store",
            "create_atomic_poll")
_MEMORY = ("create_masked_load", "create_masked_store")


class GridTimeout(RuntimeError):
    """A grid's programs did not all finish within the harness's timeout (deadlock or livelock)."""


class _Abort(BaseException):
    """Unwinds a program thread when its grid is abandoned (BaseException: the interpreter's
    ``except Exception`` wrappers must not turn it into an error of its own)."""


@dataclass
class Launch:
    """One interpreted grid run by the harness: ``grid`` is (x, y, z), ``programs_finished`` the
    number of program threads that ran to completion; baton passes before atomics
    (``atomic_handovers``) and before loads/stores (``memory_handovers``)."""

    kernel: str
    grid: tuple[int, int, int]
    programs_finished: int = 0
    atomic_handovers: int = 0
    memory_handovers: int = 0

    @property
    def handovers(self) -> int:
        return self.atomic_handovers + self.memory_handovers

    @property
    def programs(self) -> int:
        return math.prod(self.grid)


@dataclass
class Harness:
    """What :func:`concurrent_programs` yields: ``active`` is False under CUDA (no-op there);
    ``launches`` lists every interpreted grid in launch order."""

    active: bool
    seed: int | None
    switch_probability: float
    timeout_s: float
    park: int = 16
    launches: list[Launch] = field(default_factory=list)


_local = threading.local()  # .grid: the _GridRun this thread is a program of; .slot: its index
_state: dict = {"harness": None}


class _GridRun:
    """The programs of one grid as threads, one holding the baton at a time."""

    def __init__(self, fn, args, indices, builder, harness: Harness, rng: random.Random | None, launch: Launch):
        self.fn, self.args, self.indices, self.builder = fn, args, indices, builder
        self.harness, self.rng, self.launch = harness, rng, launch
        self.sems = [threading.Semaphore(0) for _ in indices]
        self.alive = list(range(len(indices)))  # slots not finished, in slot order
        self.lock = threading.Lock()  # guards alive/error/aborted when threads unwind together
        self.done = threading.Event()
        self.aborted = False
        self.clock = 0  # hand-overs so far: parking is measured in them
        self.parked_until = [0] * len(indices)
        self.error: BaseException | None = None

    # -- scheduling (called only by the baton holder, except during an abort) --
    def _next(self, me: int) -> int | None:
        """The program to run after ``me``: round-robin, or drawn at random among the others that
        are not parked (when all others are parked, the one whose parking ends first)."""
        candidates = [s for s in self.alive if s != me]
        if not candidates:
            return None
        if self.rng is None:  # round-robin: the first alive slot after me, wrapping around
            later = [s for s in candidates if s > me]
            return later[0] if later else candidates[0]
        free = [s for s in candidates if self.parked_until[s] <= self.clock]
        if not free:
            return min(candidates, key=lambda s: self.parked_until[s])
        return free[self.rng.randrange(len(free))]

    def hand_over(self, me: int, always: bool) -> None:
        """A hand-over point before a memory operation of program ``me``."""
        if self.aborted:
            raise _Abort
        if not always and (self.rng is None or self.rng.random() >= self.harness.switch_probability):
            return
        nxt = self._next(me)
        if nxt is None:
            return
        self.clock += 1
        if always:
            self.launch.atomic_handovers += 1
        else:
            self.launch.memory_handovers += 1
            if self.harness.park and max(self.parked_until) <= self.clock:
                # overtaken mid-step: sit out a while (one program at a time), so the others run ahead
                self.parked_until[me] = self.clock + self.rng.randint(1, self.harness.park * (len(self.alive) - 1))
        self.sems[nxt].release()
        self.sems[me].acquire()
        if self.aborted:
            raise _Abort
        self.builder.grid_idx = self.indices[me]  # the interpreter's one global program index

    # -- threads --
    def _program(self, slot: int) -> None:
        _local.grid, _local.slot = self, slot
        self.sems[slot].acquire()
        finished = False
        try:
            if self.aborted:
                raise _Abort
            self.builder.grid_idx = self.indices[slot]
            self.fn(**self.args)
            finished = True
        except _Abort:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the launching thread
            with self.lock:
                if self.error is None:
                    self.error = exc
            self._abort()
        finally:
            self._finish(slot, finished)

    def _abort(self) -> None:
        with self.lock:
            self.aborted = True
            for s in self.alive:
                self.sems[s].release()

    def _finish(self, slot: int, finished: bool) -> None:
        with self.lock:
            self.alive.remove(slot)
            self.launch.programs_finished += finished
            if not self.alive:
                self.done.set()
                return
            if self.aborted:
                return  # every alive thread was released by _abort and unwinds on its own
        nxt = self._next(slot)
        self.sems[nxt].release()

    def run(self) -> None:
        threads = [threading.Thread(target=self._program, args=(s,), daemon=True,
                                    name=f"triton-program-{self.indices[s]}") for s in range(len(self.indices))]
        for t in threads:
            t.start()
        first = 0 if self.rng is None else self.rng.randrange(len(self.indices))
        self.sems[first].release()
        if not self.done.wait(self.harness.timeout_s):
            stuck = [self.indices[s] for s in self.alive]
            self._abort()
            self.done.wait(5.0)
            raise GridTimeout(
                f"{self.launch.kernel}: grid {self.launch.grid} did not finish within {self.harness.timeout_s:g} s; "
                f"programs {stuck} still running (a barrier that is never satisfied, or a program that never "
                f"reaches a memory operation)")
        for t in threads:
            t.join()
        if self.error is not None:
            raise self.error


def _hand_over_point(always: bool) -> None:
    run = getattr(_local, "grid", None)
    if run is not None:
        run.hand_over(_local.slot, always or getattr(_local, "in_atomic", False))


def _wrap_memory_op(original, is_atomic: bool):
    def op(*args, **kwargs):
        _hand_over_point(is_atomic)
        if not is_atomic:
            return original(*args, **kwargs)
        # Atomic load/store/poll go through the masked load/store: those must not draw a second
        # random hand-over, and a poll's wait loop must hand over at each of its loads.
        outer = getattr(_local, "in_atomic", False)
        _local.in_atomic = True
        try:
            return original(*args, **kwargs)
        finally:
            _local.in_atomic = outer
    return op


class _Collector:
    """Stands in for the kernel in ``GridExecutor.__call__``: its grid loop calls this once per
    program index; the last call runs all collected programs as threads. The interpreter reads
    the kernel's parameters (``inspect.getfullargspec``/``getcallargs``) and its module globals
    (``_patch_lang`` looks for ``triton.language`` there) from it, hence the two attributes."""

    def __init__(self, real_fn, builder, harness: Harness, rng: random.Random | None):
        self.real_fn, self.builder, self.harness, self.rng = real_fn, builder, harness, rng
        self.__signature__ = inspect.signature(real_fn)
        self.__globals__ = real_fn.__globals__
        self.__name__ = real_fn.__name__
        self.indices: list[tuple[int, int, int]] = []

    def __call__(self, **fn_args):
        builder = self.builder
        self.indices.append(tuple(builder.grid_idx))
        if len(self.indices) < math.prod(builder.grid_dim):
            return
        launch = Launch(self.__name__, tuple(builder.grid_dim))
        self.harness.launches.append(launch)
        # The loop passes the same converted arguments to every program: the threads share them.
        run = _GridRun(self.real_fn, fn_args, self.indices, builder, self.harness, self.rng, launch)
        last = builder.grid_idx
        try:
            run.run()
        finally:
            builder.grid_idx = last


def _collecting_call(original_call, builder, harness: Harness, rng):
    """``GridExecutor.__call__`` whose grid loop collects the programs, then runs them as threads."""

    def __call__(self, *args, **kwargs):
        real_fn = self.fn
        self.fn = _Collector(real_fn, builder, harness, rng)
        try:
            return original_call(self, *args, **kwargs)
        finally:
            self.fn = real_fn

    return __call__


@contextlib.contextmanager
def concurrent_programs(seed: int | None = None, *, switch_probability: float = 0.25, park: int = 16,
                        timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Harness]:
    """While active, interpreted grids run their programs as co-resident threads (see module doc).

    ``seed``: None for the round-robin, atomics-only schedule; an int for the seeded random schedule
    that also hands over before loads and stores with probability ``switch_probability`` (0..1).
    ``timeout_s``: wall-clock limit per grid before :class:`GridTimeout`. Also declares concurrent
    programs to the launch configuration (``set_interpreter_concurrent_programs``), so the persistent
    level gets the exact sm_90 grid when ``use_gpu_tiles(True)`` is set. Yields a :class:`Harness`.
    Raises ValueError for a bad argument, RuntimeError when nested.
    """
    if not 0.0 <= switch_probability <= 1.0:
        raise ValueError(f"switch_probability must be in [0, 1], got {switch_probability}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if isinstance(park, bool) or not isinstance(park, int) or park < 0:
        raise ValueError(f"park must be an int >= 0, got {park!r}")
    if seed is not None and not isinstance(seed, int):
        raise ValueError(f"seed must be an int or None, got {seed!r}")
    harness = Harness(launch_config.interpreter_on(), seed, switch_probability, timeout_s, park)
    if not harness.active:  # CUDA: real programs are co-resident already
        yield harness
        return
    if _state["harness"] is not None:
        raise RuntimeError("concurrent_programs() is already active")

    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    rng = None if seed is None else random.Random(seed)
    saved_call = interpreter.GridExecutor.__call__
    saved_ops = {name: builder.__dict__.get(name) for name in _ATOMICS + _MEMORY if hasattr(builder, name)}
    saved_concurrent = launch_config._concurrent_programs_under_interpreter
    _state["harness"] = harness
    try:
        interpreter.GridExecutor.__call__ = _collecting_call(saved_call, builder, harness, rng)
        for name in saved_ops:
            setattr(builder, name, _wrap_memory_op(getattr(builder, name), name in _ATOMICS))
        launch_config.set_interpreter_concurrent_programs(True)
        yield harness
    finally:
        launch_config.set_interpreter_concurrent_programs(saved_concurrent)
        for name, previous in saved_ops.items():
            if previous is None:
                builder.__dict__.pop(name, None)  # back to the class's method
            else:
                setattr(builder, name, previous)
        interpreter.GridExecutor.__call__ = saved_call
        _state["harness"] = None
