"""lstm-triton: a fused Triton LSTM, a drop-in for torch.nn.LSTM, and the d2l char-LM around it.

>>> import lstm_triton
>>> layer = lstm_triton.LSTM(28, 256)          # same arguments and weights as torch.nn.LSTM
"""

__version__ = "0.1.0"

from .data import CharData  # noqa: E402
from .model import CharLM, predict  # noqa: E402
from .naive import NaiveLSTM, from_nn_lstm, to_nn_lstm  # noqa: E402
from .train import TrainConfig, Trainer, train  # noqa: E402

__all__ = [
    "CharData", "CharLM", "NaiveLSTM", "Trainer", "TrainConfig", "__version__",
    "from_nn_lstm", "predict", "to_nn_lstm", "train",
]

from .lstm import LSTM, lstm  # noqa: E402

__all__ += ["LSTM", "lstm"]

from .gru_rnn import GRU, RNN, gru, rnn  # noqa: E402

__all__ += ["GRU", "RNN", "gru", "rnn"]
