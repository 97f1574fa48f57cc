"""The model shape and training loop of PyTorch's examples/word_language_model (model.py, main.py),
cut small: embedding → dropout → a 2-layer recurrent layer with dropout → dropout → a decoder whose
weight is the embedding's; truncated BPTT with ``repackage_hidden``, ``clip_grad_norm_`` and SGD."""

from __future__ import annotations

import torch
from torch import nn

NTOKEN = 11


class WordLM(nn.Module):
    """The example's RNNModel around a given recurrent layer (to run, tied weights need input size = hidden size)."""

    def __init__(self, rnn: nn.Module, ntoken: int = NTOKEN, dropout: float = 0.2):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, rnn.input_size)
        self.rnn = rnn
        self.decoder = nn.Linear(rnn.hidden_size, ntoken)
        self.decoder.weight = self.encoder.weight  # "tie_weights"

    def forward(self, tokens, hidden=None):
        output, hidden = self.rnn(self.drop(self.encoder(tokens)), hidden)
        return self.decoder(self.drop(output)).view(-1, self.decoder.out_features), hidden


def repackage_hidden(h):
    """The example's: detach the carried state from its history."""
    return h.detach() if isinstance(h, torch.Tensor) else tuple(repackage_hidden(v) for v in h)


def train_losses(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3, bptt: int = 4,
                 batch: int = 3, seed: int = 0) -> list[float]:
    """``steps`` BPTT steps on fixed random tokens, the global RNG (dropout masks) seeded once, the
    state carried and repackaged: the per-step losses."""
    data = torch.randint(0, NTOKEN, (steps * bptt + 1, batch), generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed + 1)
    model.train()
    hidden, losses = None, []
    for i in range(0, steps * bptt, bptt):
        x, y = data[i:i + bptt], data[i + 1:i + 1 + bptt].reshape(-1)
        optimizer.zero_grad()
        hidden = None if hidden is None else repackage_hidden(hidden)
        logits, hidden = model(x, hidden)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
        losses.append(loss.item())
    return losses
