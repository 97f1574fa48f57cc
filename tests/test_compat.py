"""The Triton releases this project supports (3.6 … 3.9) behave alike for our kernels
(kernels/compat.py). Under Triton 3.6's interpreter with NumPy >= 2.4 a runtime integer used as a
loop bound failed ("only 0-dimensional arrays can be converted to Python scalars")."""

import torch
import triton
import triton.language as tl

from lstm_triton.kernels.compat import patch_interpreter
from lstm_triton.kernels.launch_config import interpreter_on


@triton.jit
def _count_kernel(out_ptr, n, STEP: tl.constexpr):
    total = tl.zeros([], dtype=tl.int32)
    for _ in range(0, n, STEP):  # a runtime bound: the interpreter turns n into a Python int
        total += 1
    tl.store(out_ptr, total)


def test_runtime_integer_loop_bound_runs_on_this_triton():
    device = "cpu" if interpreter_on() else "cuda"
    out = torch.full((1,), -1, dtype=torch.int32, device=device)
    _count_kernel[(1,)](out, 37, STEP=8)
    assert int(out.item()) == 5


def test_patch_is_idempotent_and_only_where_needed():
    first = patch_interpreter()
    assert patch_interpreter() == first  # cached: applying twice changes nothing
    if tuple(int(p) for p in triton.__version__.split(".")[:2]) >= (3, 7):
        assert first is False  # newer interpreters squeeze themselves
