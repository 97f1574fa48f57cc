"""lstm-triton: fused Triton LSTM, GRU and RNN layers (drop-ins for torch.nn's), and the d2l char-LM around them.

The package holds two halves:

``lstm_triton.layers``  the layers: modules, functional forms, torch.library operators and autograd
                        over the kernels in ``lstm_triton.kernels``, the backend and fusion choice;
                        needs torch and triton (and numpy) only
``lstm_triton.charlm``  the d2l application: Time Machine data, char-LM model, naive baselines,
                        training loop, checkpoints, CLI (``lstm-triton``); needs the ``charlm`` extra
                        (``pip install lstm-triton[charlm]``: pandas, tqdm, matplotlib)

``import lstm_triton`` loads the layers only; the application's names below (``CharLM``, ``train``, …)
are imported on first use, so a user of the layers never imports pandas or tqdm.

>>> import lstm_triton
>>> layer = lstm_triton.LSTM(28, 256)          # same arguments and weights as torch.nn.LSTM
>>> model = lstm_triton.patch(model)           # every nn.LSTM/GRU/RNN inside a model becomes ours, in place
"""

__version__ = "0.1.0"

import importlib

from .layers import GRU, LSTM, RNN, gru, lstm, patch, rnn, unpatch

# The application's names, imported on first attribute access (PEP 562): name -> (module, attribute).
_CHARLM = {
    "CharData": ("lstm_triton.charlm", "CharData"),
    "CharLM": ("lstm_triton.charlm", "CharLM"),
    "NaiveLSTM": ("lstm_triton.charlm", "NaiveLSTM"),
    "Trainer": ("lstm_triton.charlm", "Trainer"),
    "TrainConfig": ("lstm_triton.charlm", "TrainConfig"),
    "from_nn_lstm": ("lstm_triton.charlm", "from_nn_lstm"),
    "predict": ("lstm_triton.charlm", "predict"),
    "to_nn_lstm": ("lstm_triton.charlm", "to_nn_lstm"),
    "train": ("lstm_triton.charlm.train", "train"),
}

__all__ = [
    "GRU", "LSTM", "RNN", "gru", "lstm", "rnn", "patch", "unpatch", "__version__",
    *_CHARLM,
]


def __getattr__(name: str):
    if name not in _CHARLM:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _CHARLM[name]
    try:
        value = getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError as e:  # the application's own dependencies, not a bug in the package
        raise ModuleNotFoundError(
            f"lstm_triton.{name} is part of the char-LM application, which needs {e.name!r}: "
            "pip install 'lstm-triton[charlm]'", name=e.name) from e
    globals()[name] = value  # later lookups skip __getattr__
    return value
