"""Triton device code and thin host launchers for the fused LSTM (installed as ``lstm_triton.kernels``).

No autograd and no nn.Module here: launchers take tensors, allocate outputs, pick launch
settings and launch. The PyTorch side lives in ``lstm_triton``.
"""

from .compat import patch_interpreter

patch_interpreter()  # Triton 3.6's interpreter under NumPy >= 2.4 (see compat.py)
