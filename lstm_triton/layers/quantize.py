"""Dynamic quantization of ``lstm_triton.LSTM`` and ``GRU`` by ``torch.ao.quantization.quantize_dynamic``.

torch swaps a module by its exact type: ``quantize_dynamic`` looks the module's type up in the
``qconfig_spec`` and then in its module mapping. Importing ``lstm_triton`` adds our LSTM and GRU to
torch's default dynamic mapping (``DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS``), each to an entry whose
``from_float`` builds torch's own dynamic quantized module (``torch.ao.nn.quantized.dynamic.LSTM`` /
``GRU``) from a ``torch.nn`` twin of the layer that shares its parameters. So

    quantize_dynamic(model, {lstm_triton.LSTM, lstm_triton.GRU, nn.Linear}, dtype=torch.qint8)

(or ``torch.float16``, or a dict spec keyed by our classes, or by submodule name) gives the very
modules, and outputs, that the same model built with torch.nn gives. What stays as torch leaves it:

- ``{nn.LSTM}`` / ``{nn.GRU}`` in the spec, and ``quantize_dynamic(model)`` without a spec (torch's
  default spec is a fixed dict of nn types), do not reach a subclass: our layer stays float and
  keeps running its kernels. Name our classes.
- ``lstm_triton.RNN``: torch has no dynamic quantized nn.RNN (only ``RNNCell``), so it stays float, as
  nn.RNN does. ``bias=False`` and ``proj_size`` fail in torch's ``from_float`` exactly as nn's do.
"""

from __future__ import annotations

import warnings

from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.quantization.quantization_mappings import DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS

from .gru_rnn import GRU
from .lstm import LSTM

NN_CLASSES = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN_TANH": nn.RNN, "RNN_RELU": nn.RNN}


def nn_twin(module: nn.RNNBase) -> nn.RNNBase:
    """The ``torch.nn`` layer (exactly nn.LSTM / GRU / RNN) with ``module``'s settings, holding the very
    same Parameter objects (no copy), its training flag and its ``qconfig`` if it has one. TypeError
    for a module that is not an nn.LSTM / GRU / RNN or a subclass."""
    if not isinstance(module, nn.RNNBase) or getattr(module, "mode", None) not in NN_CLASSES:
        raise TypeError(f"module must be an LSTM, GRU or RNN (torch.nn's or lstm_triton's), "
                        f"got {type(module).__name__}")
    kwargs = dict(input_size=module.input_size, hidden_size=module.hidden_size, num_layers=module.num_layers,
                  bias=module.bias, batch_first=module.batch_first, dropout=module.dropout,
                  bidirectional=module.bidirectional)
    if module.mode == "LSTM":
        kwargs["proj_size"] = module.proj_size
    elif module.mode.startswith("RNN_"):
        kwargs["nonlinearity"] = module.mode[4:].lower()
    with warnings.catch_warnings():  # nn's dropout-with-one-layer warning: the layer itself gave it already
        warnings.simplefilter("ignore")
        twin = NN_CLASSES[module.mode](**kwargs, device="meta")  # no storage: every parameter is replaced
    for name in module._flat_weights_names:
        setattr(twin, name, getattr(module, name))  # nn.RNNBase.__setattr__ keeps _flat_weights in step
    twin.train(module.training)
    if hasattr(module, "qconfig"):
        twin.qconfig = module.qconfig
    return twin


def _check_fused(mod, cls) -> None:
    if not isinstance(mod, cls):
        raise TypeError(f"from_float: mod must be an lstm_triton.{cls.__name__}, got {type(mod).__name__}")


def _mapping_entry(fused, quantized):
    """The dynamic-quantization mapping entry of ``fused`` (our LSTM or GRU): a subclass of torch's
    ``quantized`` module (never instantiated) whose ``from_float`` returns torch's own ``quantized``
    module, built from an nn twin sharing the parameters (torch's accepts only nn's exact classes)."""

    class Entry(quantized):
        @classmethod
        def from_float(cls, mod, use_precomputed_fake_quant=False):
            _check_fused(mod, fused)
            return quantized.from_float(nn_twin(mod), use_precomputed_fake_quant=use_precomputed_fake_quant)

    Entry.__name__ = Entry.__qualname__ = f"Dynamic{fused.__name__}FromFused"
    return Entry


DynamicLSTMFromFused = _mapping_entry(LSTM, nnqd.LSTM)
DynamicGRUFromFused = _mapping_entry(GRU, nnqd.GRU)

DYNAMIC_MAPPING = {LSTM: DynamicLSTMFromFused, GRU: DynamicGRUFromFused}


def register_dynamic_quantization() -> None:
    """Add our LSTM and GRU to torch's default dynamic quantization mapping (done on import;
    idempotent). A ``mapping=`` passed to quantize_dynamic replaces the default: add
    :data:`DYNAMIC_MAPPING` to it."""
    DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS.update(DYNAMIC_MAPPING)


register_dynamic_quantization()
