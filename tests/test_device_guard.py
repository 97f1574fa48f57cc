"""Every kernel launch runs with its tensors' device current (kernels/device.py).

On the CPU: each @triton.jit kernel is wrapped so that a launch records the guard it ran under;
every level and cell, forward and backward, dense, projected and variable-length, must launch only
inside a guard entered with the device of the launch's tensors. On two GPUs: a layer on the
non-current device gives the same results as on the current one.
"""

import pytest
import torch

import lstm_triton
from lstm_triton.kernels import device as guard
from lstm_triton.kernels import lstm_cell, lstm_persistent, lstm_step

from .helpers import DEVICE

KERNEL_MODULES = (lstm_cell, lstm_step, lstm_persistent)


class _RecordingKernel:
    """Stands in for a @triton.jit kernel: ``kernel[grid](*args)`` records the active guard's device
    and the devices of the tensor arguments, then launches the real kernel."""

    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            tensors = {a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)}
            self.launches.append((self.kernel.__name__, guard.guarded_device(), tensors))
            return self.kernel[grid](*args, **kwargs)

        return launch

    def __getattr__(self, name):
        return getattr(self.kernel, name)


@pytest.fixture
def launches(monkeypatch):
    seen = []
    for module in KERNEL_MODULES:
        for name in dir(module):  # the launched kernels (helpers called from inside kernels stay as they are)
            if name.endswith("_kernel"):
                monkeypatch.setattr(module, name, _RecordingKernel(getattr(module, name), seen))
    return seen


CASES = {
    "lstm": lambda: lstm_triton.LSTM(5, 20),
    "lstm-proj": lambda: lstm_triton.LSTM(5, 20, proj_size=7),
    "gru": lambda: lstm_triton.GRU(5, 20),
    "rnn": lambda: lstm_triton.RNN(5, 20),
}


@pytest.mark.skipif(DEVICE != "cpu", reason="records launches under the interpreter")
@pytest.mark.parametrize("fusion", ["cell", "step", "persistent"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("lengths", [False, True], ids=["dense", "lengths"])
def test_every_launch_runs_inside_a_guard_on_its_tensors_device(launches, case, fusion, lengths):
    layer = CASES[case]()
    layer.fusion, layer.backend = fusion, "triton"
    x = torch.randn(6, 3, 5, requires_grad=True)
    y, _ = layer(x, lengths=[6, 2, 4]) if lengths else layer(x)
    y.sum().backward()
    assert launches, "no kernel launched: the wrapper did not see the launches"
    for name, entered, tensors in launches:
        assert entered is not None, f"{name} launched outside a device guard"
        assert tensors == {entered}, f"{name} launched under {entered} with tensors on {tensors}"


def test_the_guard_makes_a_cuda_device_current(monkeypatch):
    """Without a GPU: the guard asks torch for a device context of the tensors' device (index 1
    here), and records it while inside."""
    entered = []

    class FakeDevice:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "device", FakeDevice)
    seen = []
    run = guard.on_tensor_device(lambda t: seen.append(guard.guarded_device()))
    run(_tensor_claiming("cuda:1"))
    assert entered == [torch.device("cuda:1")] and seen == [torch.device("cuda:1")]
    assert guard.guarded_device() is None  # left again


def _tensor_claiming(device: str) -> torch.Tensor:
    """A CPU tensor whose ``.device`` says ``device`` (the guard only reads the attribute)."""

    class Claiming(torch.Tensor):
        @property
        def device(self):
            return torch.device(device)

    return torch.empty(1).as_subclass(Claiming)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("fusion", ["cell", "step", "persistent"])
def test_a_layer_on_the_non_current_device_matches(fusion):
    torch.manual_seed(0)
    ref = lstm_triton.LSTM(28, 64, fusion=fusion).cuda(0)
    other = lstm_triton.LSTM(28, 64, fusion=fusion).cuda(1)
    other.load_state_dict(ref.state_dict())
    x = torch.randn(35, 32, 28, device="cuda:0")
    with torch.cuda.device(0):  # cuda:0 current, the layer on cuda:1
        y1, (h1, c1) = other(x.to("cuda:1"))
        y1.sum().backward()
    y0, (h0, c0) = ref(x)
    y0.sum().backward()
    torch.cuda.synchronize(1)
    assert torch.allclose(y1.cpu(), y0.cpu(), atol=1e-5) and torch.allclose(c1.cpu(), c0.cpu(), atol=1e-5)
    for a, b in zip(other.parameters(), ref.parameters()):
        assert torch.allclose(a.grad.cpu(), b.grad.cpu(), atol=1e-4)
