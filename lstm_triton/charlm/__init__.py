"""The application half: d2l's character-level language model on The Time Machine.

``data/``                      corpus loading, vocabulary, d2l's random and sequential iterators
``cells.py``                   the cell types (lstm, gru, rnn) and d2l's per-cell settings
``naive.py`` / ``naive_cells.py``  d2l's scratch LSTM / GRU / RNN (the ``naive`` baselines)
``naive_stack.py``             d2l's deep RNN: the scratch layers stacked (``num_layers > 1``)
``impls.py``                   implementation name + cell -> recurrent layer, from identical weights
``model.py``                   the char LM (one-hot -> recurrent layer -> linear) and ``predict``
``train.py`` / ``checkpoint.py``  the training loop (perplexity, tokens/s) and its checkpoints
``precision.py`` / ``compiled.py``  its autocast (bf16, fp16 with loss scaling) and torch.compile
``generate.py``                greedy or sampled text from a model or a checkpoint (``lstm-triton generate``)
``plot.py``                    d2l's perplexity-per-epoch figure (``lstm-triton train --plot``)
``cli.py``                     the ``lstm-triton`` command
``distributed.py``             data-parallel training under torchrun (process group, row split, sums)
"""

from ..layers.serialization import register_safe_modules
from .data import CharData
from .model import CharLM, predict
from .naive import NaiveLSTM, from_nn_lstm, to_nn_lstm
from .naive_cells import NaiveGRU, NaiveRNN
from .naive_stack import NaiveStack
from .train import TrainConfig, Trainer

# torch.save(model) of a char LM loads with torch.load's defaults, as the layers do (layers/serialization.py)
register_safe_modules(CharLM, NaiveLSTM, NaiveGRU, NaiveRNN, NaiveStack)

# ``train`` the function stays at lstm_triton.train: here it would hide the module lstm_triton.charlm.train
__all__ = ["CharData", "CharLM", "NaiveLSTM", "TrainConfig", "Trainer", "from_nn_lstm", "predict", "to_nn_lstm"]
