"""Distributed data-parallel training of the char LM under torchrun: process group, ranks, sums.

``torchrun --nproc-per-node N -m lstm_triton train ...`` starts N processes whose environment holds
WORLD_SIZE, RANK and LOCAL_RANK (and the rendezvous address). :func:`init_from_env` turns that into
a process group: NCCL with device ``cuda:LOCAL_RANK`` on GPUs, gloo on the CPU. Without torchrun's
environment nothing is initialised and every helper answers as for one process (rank 0 of 1), so a
plain run is unchanged.

The split is data parallelism over the rows of each minibatch (PyTorch's DistributedDataParallel
note, https://pytorch.org/docs/stable/notes/ddp.html): every rank draws the same batches from the
same data RNG and keeps rows ``[r*B/W, (r+1)*B/W)`` of each (:func:`shard_rows`), so the union over
ranks is the one-process batch of d2l's iterators (d2l 8.3.4). Row r of the sequential iterator
continues row r of the previous batch, so each rank's carried state stays its own rows' state.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from .data import Batch

TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    """Whether torchrun's WORLD_SIZE, RANK and LOCAL_RANK are all in the environment."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def env_world_size() -> int:
    """The number of processes torchrun started (WORLD_SIZE), 1 without torchrun; readable before
    :func:`init_from_env`, so input checks can fail on every rank before any rendezvous."""
    return int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else 1


def is_distributed() -> bool:
    """Whether this process is in an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank: the process group's, else torchrun's RANK (before init), else 0."""
    if is_distributed():
        return dist.get_rank()
    return int(os.environ["RANK"]) if launched_by_torchrun() else 0


def world_size() -> int:
    """The process group's size; 1 when there is none (a plain run trains on whole batches)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0: the one process that writes files (checkpoints, CSV, plots), shows the progress bar
    and prints; the CLI asks this for every write and every line, so the other ranks print nothing."""
    return rank() == 0


def init_from_env(device: str | torch.device = "auto") -> str | torch.device:
    """Join torchrun's process group and return this rank's device; ``device`` unchanged without torchrun.

    ``auto`` -> NCCL on ``cuda:LOCAL_RANK`` when torch sees a GPU, else gloo on the CPU; ``cpu``
    forces gloo, ``cuda`` forces NCCL. ValueError (one line) when ``cuda`` is asked for without a
    GPU or when LOCAL_RANK has no GPU of its own. Every rank must call it (it is a rendezvous).
    """
    if not launched_by_torchrun() or is_distributed():
        return device
    kind = torch.device(device).type if str(device) != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind != "cuda":
        dist.init_process_group("gloo")
        return torch.device("cpu")
    local_rank, count = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(f"device: torchrun's LOCAL_RANK is {local_rank} but torch sees {count} CUDA GPU(s) "
                         "(one process per GPU: --nproc-per-node at most the GPU count)")
    cuda = torch.device("cuda", local_rank)
    torch.cuda.set_device(cuda)
    dist.init_process_group("nccl", device_id=cuda)
    return cuda


def teardown() -> None:
    """Leave the process group, if any (so NCCL shuts down cleanly before the process exits)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group): the other ranks wait here until rank 0
    has written its files, so none exits before the run's results are on disk."""
    if is_distributed():
        dist.barrier()


def exit_together(timeout_s: float = 30.0) -> bool:
    """Before exiting on an input error under torchrun: check in on torchrun's store, then wait (at
    most ``timeout_s``) until every rank has. torchrun stops all workers as soon as one exits with
    an error, so without this the rank that fails first could get rank 0 killed before it has said
    why. No process group needed: it works before :func:`init_from_env` and after a failed one.

    True when every rank checked in (all refused, rank 0 among them), False after the timeout (this
    rank refused alone, or the store is gone); True at once without torchrun or with one process.
    """
    world = env_world_size()
    if world == 1 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":  # torchrun's agent hosts the store
        return True
    key = f"lstm-triton/refused/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    deadline = time.monotonic() + timeout_s
    try:
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                              timeout=timedelta(seconds=timeout_s))
        arrived = store.add(key, 1)
        while arrived < world and time.monotonic() < deadline:
            time.sleep(0.05)
            arrived = store.add(key, 0)
    except (RuntimeError, OSError, ValueError):  # no store to meet at: nothing to wait for
        return False
    return arrived >= world


def check_batch_split(batch_size: int, world: int) -> None:
    """ValueError unless ``batch_size`` rows split evenly over ``world`` processes (equal row counts
    per rank make DDP's average of the per-rank mean-loss gradients the global mean's gradient)."""
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} does not split evenly over the {world} processes of this run "
                         f"(each trains batch_size / {world} rows): use a multiple of {world}")


def shard_rows(batches: Iterable[Batch], rank: int, world: int) -> Iterator[Batch]:
    """Rank ``rank``'s rows ``[rank*B/world, (rank+1)*B/world)`` of every ``(X, Y)`` batch ``(B, T)``.

    The batches pass unchanged when ``world`` is 1. ``B`` must be divisible by ``world``
    (:func:`check_batch_split`).
    """
    if world == 1:
        yield from batches
        return
    for X, Y in batches:
        rows = X.shape[0] // world
        yield X[rank * rows:(rank + 1) * rows], Y[rank * rows:(rank + 1) * rows]


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when there is a process group, else ``model`` itself.

    DDP's backward all-reduces the gradients and divides by the world size, so with equal row
    counts per rank every rank ends the backward holding the gradient of the global mean loss,
    the same tensor on each. The wrapper shares ``model``'s parameters: save ``model``, not the
    wrapper (no ``module.`` prefix), and evaluate ``model`` (no collective per forward).
    """
    if not is_distributed():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def _collective_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo takes CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _reduce(values: tuple, op) -> tuple:
    if not is_distributed():
        return values
    device = _collective_device()
    buffer = torch.stack([torch.as_tensor(v, device=device).to(torch.float64).reshape(()) for v in values])
    dist.all_reduce(buffer, op=op)
    # int stays int (exact in float64 below 2**53); floats and tensors come back as Python floats
    return tuple(int(r) if isinstance(v, int) else r for v, r in zip(values, buffer.tolist()))


def sum_over_ranks(*values: float | int | torch.Tensor) -> tuple:
    """Each value summed over the ranks (one float64 all-reduce for all of them); the values
    unchanged without a process group. Ints come back as ints, floats and 0-d tensors as floats."""
    return _reduce(values, dist.ReduceOp.SUM if dist.is_available() else None)


def max_over_ranks(*values: float | int | torch.Tensor) -> tuple:
    """Each value's maximum over the ranks (e.g. an epoch's seconds: the slowest rank's wall time)."""
    return _reduce(values, dist.ReduceOp.MAX if dist.is_available() else None)
