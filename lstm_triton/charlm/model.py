"""A character language model around any recurrent layer (d2l's RNNModel / RNNModelScratch).

tokens (B, T) int64 -> one-hot (T, B, V) float -> recurrent layer -> Linear -> logits (T*B, V).
The logits are time-major, matching ``Y.T.reshape(-1)`` targets as in d2l.

The layer follows torch.nn.LSTM / GRU / RNN's calling convention. Its state is a pair
``(h, c)`` of ``(L*D, B, H)`` tensors for an LSTM and a single ``h (L*D, B, H)`` tensor for a GRU or
an RNN; the layer's ``mode`` attribute (as ``nn.RNNBase.mode``; absent means LSTM) tells which.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cells import layer_mode

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def detach_state(state: State) -> State:
    """The state cut from the graph: a tensor (GRU, RNN) or each tensor of a tuple (LSTM)."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    return tuple(s.detach() for s in state)


class CharLM(nn.Module):
    """``layer`` takes ``(T, B, V)`` input and a state: ``(h0, c0)`` of ``(L*D, B, H)`` tensors for
    an LSTM, ``h0 (L*D, B, H)`` for a GRU or RNN. ``mode`` is the cell (lstm, gru, rnn_tanh, rnn_relu).
    """

    def __init__(self, layer: nn.Module, vocab_size: int):
        super().__init__()
        self.rnn = layer
        self.mode = layer_mode(layer)
        self.vocab_size = vocab_size
        directions = 2 if getattr(layer, "bidirectional", False) else 1
        self.num_state_layers = getattr(layer, "num_layers", 1) * directions
        self.hidden_size = layer.hidden_size
        self.linear = nn.Linear(self.hidden_size * directions, vocab_size)

    def forward(self, tokens: torch.Tensor, state: State | None = None):
        """``tokens (B, T)`` int64 -> ``(logits (T*B, V), state)``: ``(h_n, c_n)`` or ``h_n``."""
        dtype = self.linear.weight.dtype
        x = F.one_hot(tokens.T.long(), self.vocab_size).to(dtype)
        y, state = self.rnn(x, state)
        return self.linear(y.reshape(-1, y.shape[-1])), state

    def begin_state(self, batch_size: int, device: torch.device | str) -> State:
        """Zeros: ``(h, c)`` for an LSTM, ``h`` for a GRU or RNN, each ``(L*D, batch_size, H)``."""
        shape = (self.num_state_layers, batch_size, self.hidden_size)
        dtype = self.linear.weight.dtype
        h = torch.zeros(shape, device=device, dtype=dtype)
        if self.mode != "lstm":
            return h
        return h, torch.zeros(shape, device=device, dtype=dtype)


def predict(model: CharLM, prefix: str, num_preds: int, vocab, device: torch.device | str = "cpu") -> str:
    """Greedy continuation of ``prefix`` (d2l's predict_ch8): warm up on the prefix, then argmax.

    The greedy case of :func:`lstm_triton.charlm.generate.sample` (one code path for both)."""
    from .generate import sample  # here: generate.py imports this module

    return sample(model, prefix, num_preds, vocab, device)
