"""What one supported Triton release (3.6 … 3.9) does differently from another, in one place.

Each entry names the releases it concerns and is applied by detecting the behaviour, not the
version number, so a fixed release is left alone.

* **Interpreter: a runtime integer as a Python integer.** The interpreter passes every integer
  argument as a one-element numpy array and turns it into a Python ``int`` (``range(0, K, BLOCK_K)``,
  ``range(T)``) through ``tensor.__index__``. Triton ≤ 3.6 calls ``int(array)``, which NumPy ≥ 2.4
  refuses for arrays of one dimension ("only 0-dimensional arrays can be converted to Python
  scalars"); Triton ≥ 3.7 squeezes first. :func:`patch_interpreter` gives the older interpreter the
  newer one's ``__index__``; GPU compilation is not concerned (the loop bound is an IR value there).
"""

from __future__ import annotations

import functools

import numpy as np


def _numpy_refuses_one_element_int() -> bool:
    try:
        int(np.array([1]))
    except TypeError:
        return True
    return False


def _index(tensor) -> int:
    return int(tensor.handle.data.squeeze())


@functools.cache
def patch_interpreter() -> bool:
    """Make the Triton interpreter's ``tensor.__index__`` squeeze before ``int`` (Triton ≥ 3.7's
    behaviour) where this Triton's does not and this NumPy needs it. Returns whether it patched.
    Idempotent; call before an interpreted launch (the kernels package does at import)."""
    try:
        from triton.runtime import interpreter
    except ImportError:  # no interpreter in this Triton build: nothing to patch
        return False
    patch_tensor = getattr(interpreter, "_patch_lang_tensor", None)
    if patch_tensor is None or not _numpy_refuses_one_element_int():
        return False

    class _Probe:  # what _patch_lang_tensor sets __index__ on, seen through a recording scope
        pass

    class _Recorder:
        def __init__(self):
            self.attrs = {}

        def set_attr(self, obj, name, value):
            self.attrs[name] = value

    recorder = _Recorder()
    patch_tensor(_Probe, recorder)
    index = recorder.attrs.get("__index__")
    probe = _Probe()
    probe.handle = type("Handle", (), {"data": np.array([3], dtype=np.int32)})()
    try:
        if index is None or index(probe) == 3:
            return False  # this interpreter already converts one-element arrays
    except TypeError:
        pass

    @functools.wraps(patch_tensor)
    def patched(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", _index)

    interpreter._patch_lang_tensor = patched
    return True
