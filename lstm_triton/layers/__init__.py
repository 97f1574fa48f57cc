"""The layers half: ``LSTM``, ``GRU``, ``RNN`` (drop-ins for torch.nn's) and their functional forms.

``lstm.py`` / ``gru_rnn.py``          the modules and functional forms
``rnn_base.py``                       what the three modules share: checks, autocast, layers, directions
``ops.py`` / ``rnn_ops.py``           torch.library operators over the kernel launchers
``autograd.py`` / ``rnn_autograd.py`` their autograd, and the differentiable torch backward
``backend.py``                        the one place that picks the backend (triton / torch) and fusion level
``packed.py``                         PackedSequence and ``lengths=`` on the fused recurrence
``patching.py``                       ``patch``/``unpatch``: nn's layers inside a model become ours, in place, and back
``serialization.py``                  the layers as safe globals of torch.load's default ``weights_only=True``
``kernel_report.py``                  ahead-of-time sm_80 / sm_90 / gfx9xx builds: registers, spills, shared memory
``export.py``                         what ONNX export and torch.jit.script see of the layers
``quantize.py``                       dynamic quantization (quantize_dynamic) of LSTM and GRU
"""

from . import serialization  # noqa: F401  (registers the modules with torch.load's weights-only unpickler)
from .gru_rnn import GRU, RNN, gru, rnn
from .lstm import LSTM, lstm
from .patching import patch, unpatch
from .quantize import register_dynamic_quantization  # noqa: F401  (importing it registers LSTM and GRU)

__all__ = ["GRU", "LSTM", "RNN", "gru", "lstm", "patch", "rnn", "unpatch"]
