"""A character language model around any nn.LSTM-like layer (d2l's RNNModel / RNNModelScratch).

tokens (B, T) int64 -> one-hot (T, B, V) float -> recurrent layer -> Linear -> logits (T*B, V).
The logits are time-major, matching ``Y.T.reshape(-1)`` targets as in d2l.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CharLM(nn.Module):
    """``layer`` takes ``(T, B, V)`` input and a state ``(h0, c0)`` of ``(L*D, B, H)`` tensors."""

    def __init__(self, layer: nn.Module, vocab_size: int):
        super().__init__()
        self.rnn = layer
        self.vocab_size = vocab_size
        directions = 2 if getattr(layer, "bidirectional", False) else 1
        self.num_state_layers = getattr(layer, "num_layers", 1) * directions
        self.hidden_size = layer.hidden_size
        self.linear = nn.Linear(self.hidden_size * directions, vocab_size)

    def forward(self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """``tokens (B, T)`` int64 -> ``(logits (T*B, V), (h_n, c_n))``."""
        dtype = self.linear.weight.dtype
        x = F.one_hot(tokens.T.long(), self.vocab_size).to(dtype)
        y, state = self.rnn(x, state)
        return self.linear(y.reshape(-1, y.shape[-1])), state

    def begin_state(self, batch_size: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.num_state_layers, batch_size, self.hidden_size)
        dtype = self.linear.weight.dtype
        return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)


@torch.no_grad()
def predict(model: CharLM, prefix: str, num_preds: int, vocab, device: torch.device | str = "cpu") -> str:
    """Greedy continuation of ``prefix`` (d2l's predict_ch8): warm up on the prefix, then argmax."""
    if not prefix:
        raise ValueError("prefix must be a non-empty string")
    was_training = model.training
    model.eval()
    try:
        ids = vocab.encode(prefix)
        state = model.begin_state(1, device)
        out = list(ids)
        if len(ids) > 1:  # warm-up: feed all but the last prefix character in one call
            _, state = model(torch.tensor([ids[:-1]], device=device), state)
        for _ in range(num_preds):
            logits, state = model(torch.tensor([[out[-1]]], device=device), state)
            out.append(int(logits.argmax(dim=1)[0]))
        return vocab.decode(out)
    finally:
        model.train(was_training)
