"""Every path that runs on the kernels makes no host synchronisation and no copy from the host per
call, so a layer can be captured in a CUDA graph and its launches never wait for the device.

Counted on the CPU with a dispatch mode: ``aten._local_scalar_dense`` (``item()``, ``int()``,
``bool()`` of a tensor: a device-to-host read on a GPU) and ``aten.lift_fresh`` (a tensor made
from Python data: a host-to-device copy when it lands on a GPU). The first call may copy what it
has not seen (lengths patterns are cached on the device, as before a graph capture's warm-up); the
second call must do neither, forward or backward, for every cell, level and kind of input.
"""

import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils._python_dispatch import TorchDispatchMode

import lstm_triton

from .helpers import DEVICE

pytestmark = pytest.mark.skipif(DEVICE != "cpu", reason="counts with the kernels interpreted on the CPU")

COUNTED = {"aten::_local_scalar_dense": "host read", "aten::lift_fresh": "copy from the host"}


class HostTraffic(TorchDispatchMode):
    """Counts the ops above, and ``Tensor.cpu()`` (a device-to-host copy: on the CPU it is a no-op
    that no dispatch mode sees, so it is counted where it is called)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in COUNTED:
            self.seen.append(COUNTED[name])
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        self._cpu = torch.Tensor.cpu
        seen, cpu = self.seen, self._cpu

        def counted_cpu(tensor, *args, **kwargs):
            seen.append("copy to the host")
            return cpu(tensor, *args, **kwargs)

        torch.Tensor.cpu = counted_cpu
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.cpu = self._cpu
        return super().__exit__(*exc)


LAYERS = {
    "lstm": lambda: lstm_triton.LSTM(5, 20),
    "lstm-proj": lambda: lstm_triton.LSTM(5, 20, proj_size=7),
    "lstm-2-layers-bi": lambda: lstm_triton.LSTM(5, 20, num_layers=2, bidirectional=True),
    "gru": lambda: lstm_triton.GRU(5, 20),
    "rnn": lambda: lstm_triton.RNN(5, 20, nonlinearity="relu"),
}
LENGTHS = [4, 2, 0, 3]


def _inputs(kind):
    """The call's arguments, made before counting starts (a tensor of lengths made from a list is
    the caller's own copy)."""
    x = torch.randn(4, 4, 5, requires_grad=True)
    if kind == "dense":
        return (x,), {}
    if kind == "lengths-list":
        return (x,), {"lengths": LENGTHS}
    if kind == "lengths-cpu-tensor":
        return (x,), {"lengths": torch.tensor(LENGTHS)}
    # a PackedSequence, unsorted: its sorted_indices live on the data's device
    return (pack_padded_sequence(x, torch.tensor([4, 2, 1, 3]), enforce_sorted=False),), {}


def _call(layer, args, kwargs):
    out = layer(*args, **kwargs)[0]
    return out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out


# Each level's launchers on dense input, for every layer; variable lengths (the same code before
# the kernels at every level, packed.py) at the step level, for every layer.
CASES = [(name, fusion, "dense") for name in LAYERS for fusion in ("cell", "step", "persistent")] + [
    (name, "step", kind) for name in LAYERS for kind in ("lengths-list", "lengths-cpu-tensor", "packed")]


@pytest.mark.parametrize("name, fusion, kind", CASES, ids=["-".join(case) for case in CASES])
def test_a_call_reads_nothing_back_and_copies_nothing_over(name, fusion, kind, monkeypatch):
    from lstm_triton.kernels import lstm_persistent

    monkeypatch.setattr(lstm_persistent, "CHECK_BARRIER_ON_HOST", False)  # the opt-in host check reads
    torch.manual_seed(0)
    layer = LAYERS[name]()
    layer.fusion, layer.backend = fusion, "triton"
    _call(layer, *_inputs(kind)).sum().backward()  # warm-up: the lengths pattern reaches the device once
    args, kwargs = _inputs(kind)
    with HostTraffic() as counted:
        _call(layer, args, kwargs).sum().backward()
    assert counted.seen == [], f"{name} {fusion} {kind}: {counted.seen}"


def test_the_counter_sees_a_host_read_and_a_copy():
    """Negative control: what the kernels' paths must not do, counted."""
    with HostTraffic() as counted:
        t = torch.tensor([1, 2])
        int(t.max())
        t.cpu()
    assert counted.seen == ["copy from the host", "host read", "copy to the host"]


def test_lengths_on_the_host_are_still_checked():
    """Checked on the host (no tensor op, no read, no copy once seen), with the same error as before.
    A lengths tensor already on a GPU is the one input checked with a read (outside graph capture,
    where it is clamped instead): see check_lengths."""
    from lstm_triton.layers import packed

    packed.check_lengths([3, 1], 3, 2, "cpu")
    with HostTraffic() as counted:
        packed.check_lengths([3, 1], 3, 2, "cpu")
    assert counted.seen == []
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=3\], got values from 1 to 4"):
        packed.check_lengths([4, 1], 3, 2, "cpu")


# ----------------------------------------------------------------------------- the lengths cache


def test_the_lengths_cache_is_shared_safely_by_threads():
    """Four threads with more patterns than the cache keeps (an unlocked cache lost entries under
    them: KeyError from its eviction)."""
    import threading

    from lstm_triton.layers import packed

    errors = []

    def worker(seed):
        try:
            for i in range(200):
                t = packed.on_device(((seed * 7 + i) % 90, 1), "cpu")
                assert t.tolist() == [(seed * 7 + i) % 90, 1]
        except Exception as exc:  # noqa: BLE001 - any failure in a thread is the finding
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show every run
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == [] and len(packed._device_copies) <= packed.DEVICE_COPIES_KEPT + len(packed._captured)


def test_a_pattern_used_in_a_graph_capture_is_never_evicted(monkeypatch):
    from lstm_triton.layers import packed

    monkeypatch.setattr(packed, "_captured", set())
    monkeypatch.setattr(packed, "_capturing", lambda device: True)
    kept = packed.on_device((5, 4, 3), "cpu")
    monkeypatch.setattr(packed, "_capturing", lambda device: False)
    for i in range(2 * packed.DEVICE_COPIES_KEPT):
        packed.on_device((i, 0, 0), "cpu")
    assert packed.on_device((5, 4, 3), "cpu") is kept  # the captured graph's address stays valid


def test_compiling_does_not_guard_on_the_lengths_cache():
    """Under torch.compile the lengths become a constant of the graph: a cache that changed between
    two calls of the same pattern recompiled (dynamo guarded on its size)."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    layer = lstm_triton.LSTM(3, 5, fusion="step", backend="triton")
    counter = CompileCounter()
    run = torch.compile(lambda x: layer(x, lengths=[4, 2])[0], backend=counter)
    x = torch.randn(4, 2, 3)
    run(x)
    frames = counter.frame_count
    layer(x, lengths=[3, 3])  # another pattern enters the cache eagerly
    run(x)
    assert counter.frame_count == frames
