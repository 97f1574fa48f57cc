"""The ``compiled`` peer: ``torch.compile`` of the seed's naive loop of each cell.

What a user gets from a plain Python time loop and one line: the same layers the ``naive``
provider times (lstm_triton/charlm/naive.py and naive_cells.py: d2l's scratch LSTM, GRU and RNN,
one ``X @ W_x* + H @ W_h*`` pair of GEMMs per gate and time step — eight for the LSTM), compiled
whole with inductor (``fullgraph=True``: a graph break fails instead of running part of the loop
eagerly; ``dynamic=False``: one specialised graph per shape, as a user gets by default). The loop
is unrolled over T, so the first call compiles for a minute or more on a CPU (d2l shape, T=35, 2
cores: 50-60 s on an Intel Xeon, 95-112 s on an AMD EPYC) and every new shape compiles again: the
bench records that first call.

The layer is the naive layer itself (compiled in place with ``nn.Module.compile``), so its
parameters and their gradients are the naive provider's (bench.measure.nn_layout_grads maps them
to torch.nn's names), and so the ``naive`` and ``compiled`` rows differ only by the compiler.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.peers import SINGLE_LAYER, LayerConfig

DEFAULT_BACKEND = "inductor"
# Past this T the unrolled loop's compile runs for many minutes (the d2l shape's T=35 takes ~1 min on
# a CPU, and it grows with T): the large shape (T=1024) is refused rather than left to compile.
MAX_UNROLLED_T = 256


def available(device, dtype: torch.dtype, cell: str, config: LayerConfig = SINGLE_LAYER) -> str | None:
    """None where torch.compile can run the naive ``cell`` here, else why not."""
    from bench.cases import CELLS

    if cell not in CELLS:
        return f"the naive loops are {', '.join(CELLS)}, not {cell!r}"
    if not config.single_layer:
        return "the bench compiles one unidirectional naive layer without projection"
    if config.seq_len is not None and config.seq_len > MAX_UNROLLED_T:
        return (f"torch.compile unrolls the loop: T={config.seq_len} would compile for many minutes "
                f"(the bench compiles T <= {MAX_UNROLLED_T})")
    from torch._dynamo.eval_frame import is_dynamo_supported

    if not is_dynamo_supported():
        return "torch.compile (dynamo) does not support this Python/platform"
    return None


def backend(device=None, cell: str = "lstm", compile_backend: str = DEFAULT_BACKEND) -> str:
    """The torch.compile backend the layer runs under."""
    return compile_backend


def build(weights: dict[str, torch.Tensor], device, dtype: torch.dtype, cell: str = "lstm",
          compile_backend: str = DEFAULT_BACKEND) -> nn.Module:
    """The naive ``cell`` layer holding exactly ``weights`` (PyTorch layer-0 names), compiled with
    ``compile_backend`` ("inductor" for the bench; "aot_eager" traces and differentiates the same
    graph without generating code, which the CPU tests use to stay fast). Compilation happens at
    the first call. Dynamo's caches are reset first so that earlier cases' graphs never use up
    its recompile limit (past it dynamo would run the loop eagerly, under this peer's name)."""
    from bench.cases import cell_args
    from lstm_triton.charlm.impls import layer_from_weights

    name, nonlinearity = cell_args(cell)
    layer = layer_from_weights("naive", weights, cell=name, nonlinearity=nonlinearity).to(device=device, dtype=dtype)
    torch._dynamo.reset()
    layer.compile(backend=compile_backend, fullgraph=True, dynamic=False)
    return layer
