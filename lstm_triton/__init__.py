"""lstm-triton: fused Triton LSTM, GRU and RNN layers (drop-ins for torch.nn's), and the d2l char-LM around them.

The package holds two halves:

``lstm_triton.layers``  the layers: modules, functional forms, torch.library operators and autograd
                        over the kernels in ``lstm_triton.kernels``, the backend and fusion choice
``lstm_triton.charlm``  the d2l application: Time Machine data, char-LM model, naive baselines,
                        training loop, checkpoints, CLI (``lstm-triton``)

>>> import lstm_triton
>>> layer = lstm_triton.LSTM(28, 256)          # same arguments and weights as torch.nn.LSTM
"""

__version__ = "0.1.0"

from .charlm import CharData, CharLM, NaiveLSTM, TrainConfig, Trainer, from_nn_lstm, predict, to_nn_lstm  # noqa: E402,I001
from .charlm.train import train  # noqa: E402
from .layers import GRU, LSTM, RNN, gru, lstm, patch, rnn, unpatch  # noqa: E402

__all__ = [
    "GRU", "LSTM", "RNN", "gru", "lstm", "rnn", "patch", "unpatch",
    "CharData", "CharLM", "NaiveLSTM", "Trainer", "TrainConfig", "__version__",
    "from_nn_lstm", "predict", "to_nn_lstm", "train",
]
