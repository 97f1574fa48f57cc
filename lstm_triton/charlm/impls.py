"""The one place that turns an implementation name and a cell into a recurrent layer for the char LM.

``naive``  d2l's scratch layers, one Python step per time step (lstm_triton.charlm.naive / naive_cells)
``nn``     torch.nn.LSTM / GRU / RNN (cuDNN on GPU, ATen on CPU)
``triton`` our fused Triton layers lstm_triton.LSTM / GRU / RNN (``fusion`` picks the level)

Cells: ``lstm``, ``gru``, ``rnn`` (``nonlinearity`` tanh or relu), see :mod:`lstm_triton.charlm.cells`.

Every implementation starts from the same weights for the same seed: the canonical weights are
drawn once in d2l's scratch layout (``randn * 0.01``, zero biases, d2l's draw order) and converted
exactly, so that perplexity curves are comparable. ``init="torch"`` uses torch.nn's default init.
With ``num_layers=L`` the layer is d2l's deep RNN (§9.3): the naive impl stacks the scratch layers
(``naive_stack.py``), drawn layer 0 then layer 1 ... as d2l's ``StackedRNNScratch`` draws them, and
nn / triton get the same weights as ``weight_ih_l{k}`` etc. of one ``num_layers=L`` layer.

With the seed's init the *model* is d2l's too: one bias per gate. PyTorch's layout has two
(``bias_ih + bias_hh``); SGD on both moves their sum twice as fast as SGD on one bias, and the
gradient-norm clipping counts that gradient twice, so the nn-layout layers train ``bias_ih`` only
and keep ``bias_hh`` frozen at zero. Then every implementation follows the same trajectory, not
just the same first forward pass. This holds for every cell: LSTM and RNN biases are only ever
added, and the GRU's one exception, ``b_hn`` inside ``r ⊙ (W_hn h + b_hn)``, is a bias d2l's model
does not have (its candidate bias ``b_h`` is outside the reset product, i.e. nn.GRU's ``b_in`` in
``bias_ih``), so it stays zero in both. Training it in the nn layer would train a different model.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.gru_rnn import GRU, RNN
from ..layers.lstm import LSTM
from .cells import DEFAULT_HIDDEN, GATES, cell_mode, nn_class, nn_kwargs
from .model import CharLM
from .naive_cells import NAIVE_TYPES, from_nn_weights, new_naive, to_nn_weights
from .naive_stack import count_layers

IMPLS = ("naive", "nn", "triton")
INITS = ("seed", "torch")

# The lstm_triton layer that runs each mode on the Triton kernels.
TRITON_CLASSES: dict[str, type[nn.Module]] = {"lstm": LSTM, "gru": GRU, "rnn_tanh": RNN, "rnn_relu": RNN}


def triton_class(mode: str) -> type[nn.Module]:
    """The Triton layer class for ``mode`` (``lstm_triton.LSTM``, ``.GRU`` or ``.RNN``)."""
    return TRITON_CLASSES[mode]


def _nn_layer_weights(mode: str, vocab_size: int, hidden_size: int, init: str,
                      num_layers: int = 1) -> dict[str, torch.Tensor]:
    if init == "seed":
        return to_nn_weights(new_naive(mode, vocab_size, hidden_size, num_layers))
    layer = nn_class(mode)(vocab_size, hidden_size, num_layers=num_layers, **nn_kwargs(mode))
    return {k: v.detach() for k, v in layer.state_dict().items()}


def layer_from_weights(impl: str, weights: dict[str, torch.Tensor], fusion: str = "auto", *,
                       cell: str = "lstm", nonlinearity: str = "tanh") -> nn.Module:
    """A ``cell`` layer of ``impl`` holding exactly ``weights`` (PyTorch names, on the CPU): one layer
    for ``*_l0`` weights, ``num_layers=L`` (a :class:`NaiveStack` for naive) for ``*_l0 .. *_l{L-1}``.

    ValueError for an unknown impl, cell or nonlinearity, or weights whose shapes do not fit the cell.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    mode = cell_mode(cell, nonlinearity)
    rows, input_size = weights["weight_ih_l0"].shape
    hidden = weights["weight_hh_l0"].shape[-1]
    if rows != GATES[mode] * hidden:
        raise ValueError(f"weights: weight_ih_l0 has {rows} rows, a {mode} layer of hidden size {hidden} "
                         f"has {GATES[mode] * hidden}")
    if impl == "naive":
        return from_nn_weights(mode, weights)
    num_layers = count_layers(weights)
    if impl == "nn":
        layer = nn_class(mode)(input_size, hidden, num_layers=num_layers, **nn_kwargs(mode))
    else:  # backend="triton": never a silent torch fallback
        layer = triton_class(mode)(input_size, hidden, num_layers=num_layers, **nn_kwargs(mode), fusion=fusion,
                                   backend="triton")
    layer.load_state_dict(weights)
    return layer


def build_char_lm(
    impl: str,
    vocab_size: int,
    hidden_size: int | None = None,
    *,
    seed: int = 0,
    init: str = "seed",
    fusion: str = "auto",
    device: torch.device | str = "cpu",
    cell: str = "lstm",
    nonlinearity: str = "tanh",
    num_layers: int = 1,
) -> CharLM:
    """A CharLM whose weights depend only on ``(cell, nonlinearity, vocab_size, hidden_size, seed,
    init, num_layers)``, never on ``impl``. ``hidden_size`` defaults to d2l's for the cell (256 for
    lstm and gru, 512 for rnn). ``num_layers`` stacks that many recurrent layers (d2l §9.3; the seed's
    draw: layer 0, layer 1, ..., then the output layer). ValueError (one line, naming the argument)
    for bad input, including ``impl="triton"`` for a cell whose Triton layer this version lacks."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    mode = cell_mode(cell, nonlinearity)
    if hidden_size is None:
        hidden_size = DEFAULT_HIDDEN[cell]
    if vocab_size <= 0 or hidden_size <= 0:
        raise ValueError(f"vocab_size and hidden_size must be positive, got {vocab_size}, {hidden_size}")
    if not isinstance(num_layers, int) or num_layers <= 0:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        weights = _nn_layer_weights(mode, vocab_size, hidden_size, init, num_layers)
        head = nn.Linear(hidden_size, vocab_size)
        if init == "seed":  # the seed's W_hq = randn * 0.01, b_q = 0
            with torch.no_grad():
                head.weight.copy_(torch.randn(hidden_size, vocab_size).T * 0.01)
                head.bias.zero_()
    finally:
        torch.random.set_rng_state(gen_state)

    layer = layer_from_weights(impl, weights, fusion, cell=cell, nonlinearity=nonlinearity)
    if init == "seed" and impl != "naive":
        for name, param in layer.named_parameters():
            if name.startswith("bias_hh"):
                param.requires_grad_(False)  # d2l's single bias lives in bias_ih (module docstring)
    model = CharLM(layer, vocab_size)
    model.linear.load_state_dict(head.state_dict())
    return model.to(device)


def portable_state_dict(model: CharLM) -> dict[str, torch.Tensor]:
    """The model's weights in PyTorch's layout whatever the implementation (checkpoints move freely)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("rnn.")}
    if isinstance(model.rnn, NAIVE_TYPES):
        layer = to_nn_weights(model.rnn)
    else:
        layer = {k: v.detach().clone() for k, v in model.rnn.state_dict().items()}
    state.update({f"rnn.{k}": v for k, v in layer.items()})
    return state


def load_portable_state_dict(model: CharLM, state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`portable_state_dict` (the caller checks that the cells match)."""
    head = {k[len("linear."):]: v for k, v in state.items() if k.startswith("linear.")}
    layer = {k[len("rnn."):]: v for k, v in state.items() if k.startswith("rnn.")}
    if isinstance(model.rnn, NAIVE_TYPES):  # first: it may refuse (a GRU b_hn it cannot hold) before copying
        from_nn_weights(model.mode, layer, model.rnn)
    else:
        model.rnn.load_state_dict(layer)
    model.linear.load_state_dict(head)
