"""What ONNX export and TorchScript see of ``lstm_triton.LSTM`` / ``GRU`` / ``RNN``.

ONNX export (``torch.onnx.export``, ``dynamo=False`` and ``dynamo=True``): an ONNX graph cannot hold a
Triton kernel, so while an exporter traces the layer it runs torch's recurrence
(:func:`lstm_triton.layers.backend.choose_backend` resolves every call to ``torch`` then), and the
exporter emits exactly what it emits for nn's layer: ONNX's ``LSTM`` / ``GRU`` / ``RNN`` operators
(the dynamo exporter unrolls nn.RNN into plain ops, and so ours), PackedSequence input where the
exporter supports it for nn's layer (``dynamo=False``). Two things nn's exporters cannot represent
are refused here with one line instead of giving a wrong or broken file: ``proj_size > 0`` (ONNX's
LSTM has no projection; the dynamo exporter writes a model that onnxruntime rejects, the other one
fails) and ``lengths=`` (ours only: the exporters would bake the traced lengths into the graph as
constants; pack the input instead).

TorchScript: ``torch.jit.script`` cannot compile the layer's forward (Python that dispatches to
Triton kernels) and is deprecated in torch; a model holding the layer fails with one line naming
the routes that work: ``torch.jit.trace``, ``torch.compile``, ``torch.export``.
"""

from __future__ import annotations

import torch

try:  # the flag behind is_in_onnx_export() for the dynamo exporter (private: without it, the public check only)
    from torch.onnx._internal.exporter import _flags as _dynamo_exporter_flags
except ImportError:  # pragma: no cover - a torch that moved it
    _dynamo_exporter_flags = None


def in_onnx_export() -> bool:
    """True while either ONNX exporter traces the model: ``torch.onnx.is_in_onnx_export()`` (the
    TorchScript-based exporter, and the dynamo exporter's non-strict ``torch.export`` pass), or the
    dynamo exporter's own flag. The flag is read directly because dynamo folds
    ``is_in_onnx_export()`` to False: the exporter's strict pass (tried when the non-strict one fails)
    would otherwise trace the kernels and end in a conversion error instead of nn's (or our) error.
    Under torch.compile both are False, so a compiled graph keeps the kernels."""
    if torch.onnx.is_in_onnx_export():
        return True
    return bool(getattr(_dynamo_exporter_flags, "_is_onnx_exporting", False))


def check_onnx_exportable(proj_size: int, lengths) -> None:
    """Raise ``torch.onnx.errors.OnnxExporterError`` (one line, naming the argument) for what ONNX
    export cannot represent: ``proj_size > 0`` or a ``lengths`` argument. Call only during export."""
    if proj_size > 0:
        raise torch.onnx.errors.OnnxExporterError(
            f"proj_size={proj_size} cannot be exported to ONNX: ONNX's LSTM operator has no projection "
            "(torch.nn.LSTM with proj_size > 0 does not export either); use proj_size=0")
    if lengths is not None:
        raise torch.onnx.errors.OnnxExporterError(
            "lengths= cannot be exported to ONNX (the traced lengths would become constants of the graph); "
            "pass torch.nn.utils.rnn.pack_padded_sequence(x, lengths) as the input instead, as for torch.nn's "
            "layers (dynamo=False exports it)")


def refuse_torchscript(module: torch.nn.Module):
    """``__prepare_scriptable__`` of the layers: ``torch.jit.script`` calls it on every module of a
    model before compiling, so a model holding the layer fails here, with the working routes named,
    instead of deep in the layer's source."""
    name = f"lstm_triton.{type(module).__name__}"
    raise RuntimeError(
        f"torch.jit.script cannot compile {name} (its forward dispatches to Triton kernels); use "
        "torch.jit.trace(model, example_inputs), torch.compile(model) or torch.export.export(model, args) instead")
