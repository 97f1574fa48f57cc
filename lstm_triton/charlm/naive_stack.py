"""d2l's deep RNN from scratch: the seed's scratch layers stacked, each layer's output sequence the
next layer's input (d2l §9.3 "Deep Recurrent Neural Networks", ``StackedRNNScratch``).

d2l builds the stack as ``[RNNScratch(num_inputs if i == 0 else num_hiddens, num_hiddens) for i in
range(num_layers)]``: layer 0 reads the input (the one-hot vocabulary), layers 1..L-1 read the
layer below's hidden state, and each layer draws all of its own parameters (its scratch
``__init__``) before the next one is built. :func:`stack_layers` builds them in that order, so the
random draw is d2l's: layer 0's parameters, then layer 1's, ... (the output layer after, as in
``RNNLMScratch``). Any of the seed's cells stacks the same way (d2l: "replace the hidden state
computation ... with that from a GRU or an LSTM").

The state follows nn.LSTM / nn.GRU / nn.RNN with ``num_layers=L``: ``(h, c)`` of ``(L, B, H)`` tensors
for an LSTM, ``h (L, B, H)`` otherwise (d2l keeps a list ``Hs`` of per-layer states; row ``k`` here
is d2l's ``Hs[k]``). PyTorch's weights for layer ``k`` carry the suffix ``_l{k}``
(``weight_ih_l1 (G*H, H)``); :func:`layer_weights` / :func:`with_layer_suffix` move one layer's
weights between that layout and the single-layer (``_l0``) one the per-layer conversions use.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn

_LAYER_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)$")


class NaiveStack(nn.Module):
    """``L`` scratch layers of one cell, stacked (d2l's ``StackedRNNScratch``), time loop in Python.

    ``layers``: the naive layers (all one ``mode``; layer 0 of input size ``I``, the others of input
    size ``H``). Input ``(T, B, I)`` float; state ``(h, c)`` of ``(L, B, H)`` tensors for an LSTM,
    ``h (L, B, H)`` for a GRU or RNN, or ``None`` for zeros. Returns ``(output (T, B, H), state)``,
    the top layer's outputs and every layer's final state, shaped as the input state.
    ValueError for layers that do not stack (mixed cells, wrong input sizes) or a wrong state shape.
    """

    bidirectional = False

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        if not layers:
            raise ValueError("NaiveStack: layers must hold at least one layer")
        first = layers[0]
        for k, layer in enumerate(layers[1:], start=1):
            if layer.mode != first.mode or layer.hidden_size != first.hidden_size:
                raise ValueError(f"NaiveStack: layer {k} is a {layer.mode} of hidden size {layer.hidden_size}, "
                                 f"layer 0 a {first.mode} of hidden size {first.hidden_size}")
            if layer.input_size != first.hidden_size:
                raise ValueError(f"NaiveStack: layer {k} reads {layer.input_size} inputs, "
                                 f"the layer below gives {first.hidden_size}")
        self.layers = nn.ModuleList(layers)
        self.mode = first.mode  # as nn.RNNBase.mode: tells CharLM the cell and the state's form
        self.num_layers = len(layers)
        self.input_size, self.hidden_size = first.input_size, first.hidden_size

    def forward(self, inputs: torch.Tensor, state=None):
        if inputs.dim() != 3 or inputs.shape[-1] != self.input_size:
            raise ValueError(f"NaiveStack: input must be (T, B, {self.input_size}), got {tuple(inputs.shape)}")
        lstm = self.mode == "LSTM"
        if state is not None:
            states = state if lstm else (state,)
            want = (self.num_layers, inputs.shape[1], self.hidden_size)
            for s in states:
                if not isinstance(s, torch.Tensor) or tuple(s.shape) != want:
                    got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                    raise ValueError(f"NaiveStack: each state must be a {want} tensor, got {got}")
        outputs, finals = inputs, []
        for k, layer in enumerate(self.layers):
            if state is None:
                layer_state = None
            else:
                layer_state = (state[0][k:k + 1], state[1][k:k + 1]) if lstm else state[k:k + 1]
            outputs, final = layer(outputs, layer_state)  # this layer's outputs: the next one's input
            finals.append(final)
        if lstm:
            return outputs, (torch.cat([h for h, _ in finals]), torch.cat([c for _, c in finals]))
        return outputs, torch.cat(finals)


def stack_layers(make_layer: Callable[[int, int], nn.Module], input_size: int, hidden_size: int,
                 num_layers: int) -> NaiveStack:
    """A stack of ``num_layers`` layers ``make_layer(in, hidden_size)``, built (and so drawn from the
    RNG) in d2l's order: layer 0 with ``in = input_size``, then layers 1.. with ``in = hidden_size``."""
    if not isinstance(num_layers, int) or num_layers <= 0:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    return NaiveStack([make_layer(input_size if k == 0 else hidden_size, hidden_size) for k in range(num_layers)])


def count_layers(state: dict[str, torch.Tensor]) -> int:
    """Number of layers in PyTorch-layout weights (``weight_ih_l0`` .. ``weight_ih_l{L-1}``).

    ValueError if the layer indices are not ``0..L-1`` or a key is not a unidirectional layer weight.
    """
    indices = set()
    for key in state:
        match = _LAYER_KEY.match(key)
        if match is None:
            raise ValueError(f"weights: unexpected key {key!r} (expected weight_ih_l<k>, weight_hh_l<k>, "
                             f"bias_ih_l<k>, bias_hh_l<k>)")
        indices.add(int(match.group(2)))
    if indices != set(range(len(indices))) or not indices:
        raise ValueError(f"weights: layer indices must be 0..L-1, got {sorted(indices)}")
    return len(indices)


def layer_weights(state: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Layer ``k``'s weights renamed to layer 0 (``weight_ih_l{k}`` -> ``weight_ih_l0``)."""
    suffix = f"_l{k}"
    return {key[: -len(suffix)] + "_l0": value for key, value in state.items() if key.endswith(suffix)}


def with_layer_suffix(weights: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Single-layer weights (``*_l0``) renamed to layer ``k`` (``*_l{k}``)."""
    return {key[: -len("_l0")] + f"_l{k}": value for key, value in weights.items()}
