"""Whole-model ``torch.save`` / ``torch.load`` with torch's default ``weights_only=True``.

torch's weights-only unpickler rebuilds only the classes it is told are safe. It knows none of
nn's modules either: a model with ``nn.LSTM`` loads under ``torch.serialization.safe_globals([...])``
naming the model's classes (as PyTorch's word_language_model example does). Ours are registered
here, on import of the layers, so a model holding them needs no more than the same model holding
nn's layers: with our layers swapped in for nn's, the same ``safe_globals`` list loads it, and
back come our classes. A pickled layer of ours references nothing else: its ``fusion``/``backend``
are strings and the rest of its state is nn's (parameters, ordered dicts, lists of names).
"""

from __future__ import annotations

import torch

from .gru_rnn import GRU, RNN
from .lstm import LSTM

SAFE_MODULES = (LSTM, GRU, RNN)


def register_safe_modules(*modules: type) -> None:
    """Let ``torch.load(f)`` (``weights_only=True``) rebuild the given module classes; every
    module class this package defines registers itself through here on import."""
    torch.serialization.add_safe_globals(list(modules))


register_safe_modules(*SAFE_MODULES)
