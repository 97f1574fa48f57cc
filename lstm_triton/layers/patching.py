"""``patch(model)``: every ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` inside a model becomes ours, in place;
``unpatch(model)`` gives torch's classes back.

A swap changes the module's class and nothing else (``module.__class__ = ...``): our classes are
subclasses of nn's that add no parameters, buffers or state beyond the ``fusion`` and ``backend``
attributes, so the parameter objects stay the same — an optimizer built before the swap keeps
updating them — and so do hooks, tied weights, a weight-drop wrapper's plain-tensor weights and
parametrizations. A parametrized module's class is one ``torch.nn.utils.parametrize`` made for that
module (``ParametrizedLSTM``, a subclass of its class that holds the parametrized properties): it is
rebuilt over the new class, so the parametrizations keep working and removing the last of them
leaves the new class.
"""

from __future__ import annotations

import warnings

from torch import nn
from torch.nn.utils import parametrize

from .backend import BACKENDS, FUSIONS, check_choice
from .gru_rnn import GRU, RNN
from .lstm import LSTM
from .rnn_base import FusedRNNMixin

OURS = {nn.LSTM: LSTM, nn.GRU: GRU, nn.RNN: RNN}
TORCH = {ours: torch_cls for torch_cls, ours in OURS.items()}
_OUR_ATTRIBUTES = ("fusion", "backend")  # what FusedRNNMixin.__init__ adds to nn's module


def _swap_class(module: nn.Module, new_cls: type) -> None:
    """``module`` becomes a ``new_cls`` in place (parametrized: a ``Parametrized<new_cls>``)."""
    if not parametrize.is_parametrized(module):
        module.__class__ = new_cls
        return
    # torch made this class for this one module: its namespace holds a property per parametrized
    # tensor and the serialisation guard. The same namespace over the new base keeps them all.
    made = type(module)
    namespace = {k: v for k, v in vars(made).items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(f"Parametrized{new_cls.__name__}", (new_cls,), namespace)


def _swap_all(model, function: str, candidate, table: dict, on_swap) -> nn.Module:
    """Swap every module of ``model`` for which ``candidate(module)`` holds: its class (under its
    parametrizations) for ``table``'s, then ``on_swap(module)``; warn about subclasses not in ``table``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{function}: model must be a torch.nn.Module, got {type(model).__name__}")
    for name, module in model.named_modules():
        if not candidate(module):
            continue
        cls = parametrize.type_before_parametrizations(module)
        if cls in table:
            _swap_class(module, table[cls])
            on_swap(module)
        else:  # a user's subclass: replacing its class would drop whatever it defines
            warnings.warn(f"{function}: {name or 'model'} is a {cls.__module__}.{cls.__qualname__}, a subclass "
                          "of torch's class: left as it is (only torch's own classes are swapped)", stacklevel=3)
    return model


def patch(model: nn.Module, *, fusion: str = "auto", backend: str = "auto") -> nn.Module:
    """Make every ``torch.nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` in ``model`` (``model`` itself included,
    at any depth: ``nn.Sequential``, ``ModuleList``, ``ModuleDict``, wrappers) an ``lstm_triton.LSTM``,
    ``GRU`` or ``RNN``, in place, with ``fusion`` and ``backend`` as in their constructors. Returns
    ``model``.

    Shares everything: the same parameter objects (an optimizer built before keeps training them),
    hooks, tied weights, parametrizations and weight-drop wrappers. Our layers already in ``model``
    are left as they are, as are subclasses of nn's classes with code of their own (a warning names
    them; torch's parametrized classes are not such subclasses). ``unpatch`` undoes it.

    Raises TypeError when ``model`` is not an ``nn.Module``; ValueError for a ``fusion`` or
    ``backend`` outside their choices.
    """
    check_choice("fusion", fusion, FUSIONS)
    check_choice("backend", backend, BACKENDS)

    def configure(module):
        module.fusion, module.backend = fusion, backend

    def torch_layer(module):
        return isinstance(module, tuple(OURS)) and not isinstance(module, FusedRNNMixin)

    return _swap_all(model, "patch", torch_layer, OURS, configure)


def unpatch(model: nn.Module) -> nn.Module:
    """Make every ``lstm_triton.LSTM``, ``GRU`` and ``RNN`` in ``model`` (``model`` itself included)
    exactly torch's ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` again, in place, for tools that need torch's
    own classes; the parameters, hooks and parametrizations stay, our ``fusion``/``backend``
    attributes go. Returns ``model``. Raises TypeError when ``model`` is not an ``nn.Module``."""

    def forget(module):
        for attribute in _OUR_ATTRIBUTES:
            module.__dict__.pop(attribute, None)

    return _swap_all(model, "unpatch", lambda module: isinstance(module, FusedRNNMixin), TORCH, forget)
