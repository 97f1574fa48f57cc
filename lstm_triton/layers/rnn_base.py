"""What ``lstm_triton.LSTM``, ``GRU`` and ``RNN`` (and their functional forms) share: argument
checks with nn's exception types and messages, autocast, devices and dtypes, the layers ×
directions loop, PackedSequence and ``lengths``, and the ``fusion``/``backend`` choice.

A module is ``FusedRNNMixin`` in front of its nn class (``class GRU(FusedRNNMixin, nn.GRU)``). The
states travel as a tuple inside (LSTM: (h, c); GRU, RNN: (h,)); each class says how to run one
layer on the kernels and how its states look to the user (:meth:`FusedRNNMixin._run_kernel_layer`,
``_wrap``/``_unwrap`` and the rest of the hooks at the end of the class).
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence

from ..kernels.cell_math import CELL_IDS, GATES
from . import packed
from .backend import BACKENDS, FUSIONS, check_choice, choose_backend
from .export import check_onnx_exportable, in_onnx_export, refuse_torchscript

EMPTY_SEQUENCE = "Expected sequence length to be larger than 0 in RNN"  # nn's RuntimeError


def _check_state(name: str, state: torch.Tensor, x: torch.Tensor, shape: tuple[int, ...]) -> None:
    """Shape and device of one state tensor; RuntimeError with nn's message."""
    if tuple(state.shape) != shape:
        raise RuntimeError(f"Expected {name} size {shape}, got {list(state.shape)}")
    if state.device != x.device:
        raise RuntimeError(
            "Input and hidden tensors are not at the same device, found input tensor at "
            f"{x.device} and hidden tensor at {state.device}"
        )


def _check_parameter_devices(x: torch.Tensor, weights) -> None:
    """nn's RuntimeError when a parameter is not on the input's device (checked before a
    backend is chosen: the input's device alone does not decide where the layer can run)."""
    for w in weights:
        if w is not None and w.device != x.device:
            raise RuntimeError(
                "Input and parameter tensors are not at the same device, found input tensor at "
                f"{x.device} and parameter tensor at {w.device}"
            )


def _check_dtypes(x: torch.Tensor, states: dict, weights: dict) -> None:
    """Every state and parameter in the input's dtype (after autocast's casts); RuntimeError otherwise."""
    for name, t in states.items():
        if t.dtype != x.dtype:
            raise RuntimeError(f"{name} dtype ({t.dtype}) does not match input dtype ({x.dtype})")
    for name, w in weights.items():
        if w is not None and w.dtype != x.dtype:
            raise RuntimeError(f"parameter {name} dtype ({w.dtype}) does not match input dtype ({x.dtype})")


def _cpu_autocast_leaves_alone(x: torch.Tensor, mode: str, proj: bool, packed: bool) -> bool:
    """Where CPU autocast does not cast nn's recurrence as a whole (measured, torch 2.13): GRU (not
    on ATen's CPU autocast list), and the LSTM with ``proj_size``, an fp16 input or packed input
    (where ATen's generic LSTM code runs, not oneDNN's). nn's own code runs instead, with autocast
    casting its linears' operands. ``lengths`` counts as packed: it is nn's packed path padded."""
    return mode == "GRU" or (mode == "LSTM" and (proj or packed or x.dtype == torch.float16))


def autocast_dtype(x: torch.Tensor, mode: str = "LSTM", state_dtype: torch.dtype | None = None,
                   proj: bool = False, packed: bool = False) -> torch.dtype | None:
    """The dtype autocast gives the recurrent state of the nn class ``mode`` (nn.RNNBase.mode) on
    ``x``'s device, so the dtype every input, state and weight is cast to; None when autocast is off
    there. ``state_dtype``: the dtype of the last given state (GRU/RNN: hx; LSTM: c0), None when
    the states are nn's zeros (in x's dtype); ``proj``: an LSTM with ``proj_size > 0``; ``packed``:
    PackedSequence input or ``lengths``.

    CPU: the autocast dtype, except where autocast leaves nn's layer alone
    (:func:`_cpu_autocast_leaves_alone`): there autocast casts the linears' operands and the
    pointwise updates (``c = f·c_prev + i·g``; GRU's ``h = (h_prev − n)·z + n``) promote with the
    state, so the state comes out in ``promote_types(state_dtype or x.dtype, autocast dtype)``,
    for any mix of input, state and weight dtypes. (With ``proj_size`` the output and h_n are the
    projection's linear, in the autocast dtype: :func:`autocast_projection_dtype`.) Measured over
    every mix of fp32/bf16/fp16 weights, input and states under bf16/fp16 autocast, torch 2.13: 144
    GRU mixes (1 and 2 bidirectional layers), 270 LSTM mixes with h0 and c0 of their own dtypes,
    with and without proj_size, and the packed LSTM, GRU and RNN. Ours casts everything to that
    dtype (so its GEMMs run in fp32 where nn's run in the autocast dtype); None where it is float64
    (no casts: all-float64 runs as it is; nn fails on a mix with float64 too).

    CUDA: nn's RNNs run cuDNN, whose autocast rule (ATen's ``_cudnn_rnn_cast_reflatten``) casts to
    float16 whatever the autocast dtype, bf16 included.
    """
    kind = x.device.type
    if kind not in ("cpu", "cuda") or not torch.is_autocast_enabled(kind):
        return None
    if kind == "cpu" and _cpu_autocast_leaves_alone(x, mode, proj, packed):
        promoted = torch.promote_types(state_dtype or x.dtype, torch.get_autocast_dtype(kind))
        return None if promoted == torch.float64 else promoted
    if kind == "cuda" and torch.backends.cudnn.enabled and torch.backends.cudnn.is_available():
        return torch.float16
    return torch.get_autocast_dtype(kind)


def autocast_projection_dtype(x: torch.Tensor, mode: str, proj: bool) -> torch.dtype | None:
    """The dtype of an LSTM's output and h_n where CPU autocast leaves nn.LSTM with ``proj_size``
    alone: the projection is a linear, so they come out in the autocast dtype while c_n follows
    :func:`autocast_dtype`. None elsewhere (the results are all in ``autocast_dtype``)."""
    if not (proj and mode == "LSTM" and x.device.type == "cpu" and torch.is_autocast_enabled("cpu")):
        return None
    return torch.get_autocast_dtype("cpu")


def autocast_cast(t: torch.Tensor | None, dtype: torch.dtype | None):
    """nn.LSTM's autocast rule (ATen's lower-precision cast): every floating tensor except float64
    goes to the autocast dtype; differentiable, so gradients come back in the tensor's own dtype."""
    if t is None or dtype is None or not t.is_floating_point() or t.dtype == torch.float64:
        return t
    return t.to(dtype)


def _no_autocast(x: torch.Tensor, active: bool):
    # The casts are done (``active``), or autocast leaves this class alone (GRU on CPU): torch's ops
    # inside the layer must not cast (again), e.g. the projection's fp32 sum.
    on = active or (x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type))
    return torch.autocast(x.device.type, enabled=False) if on else contextlib.nullcontext()


def _reverse(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Time reversal of ``x (T,B,*)``: whole rows, or each row within its own length."""
    return x.flip(0) if lengths is None else packed.reverse_padded(x, lengths)


def prepare_functional(input: torch.Tensor, weights: dict, states: dict, gate_rows: int, fusion: str,
                       backend: str, lengths, mode: str = "LSTM"):
    """The checks and casts of a functional one-layer call after its shape checks.

    ``weights``: name -> tensor or None ("weight_ih", "weight_hh", "bias_ih", "bias_hh", ...);
    ``states``: name -> (tensor or None, expected shape); None becomes zeros. Checks devices, shapes
    (biases exactly ``(gate_rows,)``, on every backend, so that no call depends on broadcasting),
    T > 0 and dtypes (after autocast) with nn's errors; fills a missing bias of a pair with zeros
    (``gate_rows`` long). Returns ``(input, states tuple, weights dict, backend, lengths, autocast on)``."""
    if in_onnx_export():  # what ONNX cannot hold fails here, with a line that says so (export.py)
        check_onnx_exportable(0 if weights.get("weight_hr") is None else weights["weight_hr"].shape[0], lengths)
    _check_parameter_devices(input, weights.values())
    for name in ("bias_ih", "bias_hh"):  # the kernels read gate_rows values from the pointer: never broadcast
        b = weights[name]
        if b is not None and tuple(b.shape) != (gate_rows,):
            raise RuntimeError(f"{name} must have shape ({gate_rows},) (one value per gate row), "
                               f"got {tuple(b.shape)}")
    filled = {}
    for name, (t, shape) in states.items():
        filled[name] = input.new_zeros(shape) if t is None else t
        _check_state(name, filled[name], input, shape)
    if input.shape[0] == 0:
        raise RuntimeError(EMPTY_SEQUENCE)
    ac = autocast_dtype(input, mode, list(filled.values())[-1].dtype, weights.get("weight_hr") is not None,
                        lengths is not None)
    input = autocast_cast(input, ac)
    filled = {k: autocast_cast(t, ac) for k, t in filled.items()}
    weights = {k: autocast_cast(w, ac) for k, w in weights.items()}
    _check_dtypes(input, filled, weights)
    if (weights["bias_ih"] is None) != (weights["bias_hh"] is None):
        zero = torch.zeros(gate_rows, dtype=input.dtype, device=input.device)
        weights["bias_ih"] = zero if weights["bias_ih"] is None else weights["bias_ih"]
        weights["bias_hh"] = zero if weights["bias_hh"] is None else weights["bias_hh"]
    chosen = choose_backend(backend, input.device, input.dtype)
    if lengths is not None:
        lengths = packed.check_lengths(lengths, input.shape[0], input.shape[1], input.device)
    return input, tuple(filled.values()), weights, chosen, lengths, ac is not None


def evaluates_parametrizations_once(forward):
    """``forward`` with each parametrized tensor of the module evaluated once per call: the call runs
    under torch's parametrization cache (``parametrize.cached()``) when the module is parametrized.
    Without it the reads add up (nn's own forward reads a parametrized weight up to four times to
    refresh its ``_flat_weights``), and a parametrization with a side effect runs as often:
    ``spectral_norm`` in training mode steps its power iteration at every evaluation,
    ``orthogonal`` recomputes its matrix exponential. A cache the caller already holds stays theirs
    (cached() nests and clears only at the outermost exit). Not under ``torch.jit.trace``, which
    refuses the cache; there ``_read_weights`` still reads each weight once on the kernels' path."""

    @functools.wraps(forward)
    def once(self, *args, **kwargs):
        if not parametrize.is_parametrized(self) or torch._C._get_tracing_state() is not None:
            return forward(self, *args, **kwargs)
        with parametrize.cached():
            return forward(self, *args, **kwargs)

    return once


class FusedRNNMixin:
    """The forward of ``lstm_triton.LSTM``/``GRU``/``RNN`` in front of nn.LSTM/GRU/RNN (the MRO gives
    ``super()`` the nn class). Extra keyword arguments ``fusion`` and ``backend``; ``forward``
    takes ``lengths`` for padded input."""

    def __init__(self, *args, fusion: str = "auto", backend: str = "auto", **kwargs):
        check_choice("fusion", fusion, FUSIONS)
        check_choice("backend", backend, BACKENDS)
        super().__init__(*args, **kwargs)
        self.fusion = fusion
        self.backend = backend

    def __prepare_scriptable__(self):
        refuse_torchscript(self)  # torch.jit.script: one line naming trace / compile / export (export.py)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fusion={self.fusion!r}, backend={self.backend!r}"

    @evaluates_parametrizations_once
    def forward(self, input, hx=None, lengths=None):
        """nn's ``forward``, plus ``lengths`` for padded input: a 1-D sequence of B integers in
        [0, T] (see the functional form); the output stays padded (zeros past each length).
        PackedSequence input gives PackedSequence output, as nn's."""
        is_packed = isinstance(input, PackedSequence)
        if not is_packed and not isinstance(input, torch.Tensor):  # nn's type (it calls input.dim()), a clear message
            raise AttributeError(f"input must be a torch.Tensor or a PackedSequence, got {type(input).__name__}")
        data = input.data if is_packed else input
        if lengths is not None and (is_packed or data.dim() != 3):
            raise ValueError("lengths: pass it with a padded, batched 3-D input tensor (a PackedSequence carries "
                             "its own lengths)")
        self._check_hx_count(hx)
        if in_onnx_export():  # what ONNX cannot hold fails here, with a line that says so (export.py)
            check_onnx_exportable(self.proj_size, lengths)
        # set at construction, but a plain attribute: a later `layer.fusion = ...` is checked here,
        # not deep in the operator under the LSTM's name
        check_choice("fusion", self.fusion, FUSIONS)
        if data.dtype != self.weight_ih_l0.dtype and not torch._C._is_any_autocast_enabled():
            # nn's own dtype ValueError, before any backend talk (under autocast nn allows any mix;
            # its check_input would then only check the dimensions, which _triton_forward does)
            self.check_input(data, input.batch_sizes if is_packed else None)
        _check_parameter_devices(data, self._flat_weights)
        last_state = hx if isinstance(hx, torch.Tensor) or hx is None else hx[-1]  # GRU/RNN: h0; LSTM: c0
        ac = autocast_dtype(data, self.mode, None if last_state is None else last_state.dtype,
                            self.proj_size > 0, is_packed or lengths is not None)
        dtype = data.dtype if ac is None or data.dtype == torch.float64 else ac
        backend = choose_backend(self.backend, data.device, dtype)
        if lengths is not None:
            batch_dim = 0 if self.batch_first else 1
            lengths = packed.check_lengths(lengths, data.size(1 - batch_dim), data.size(batch_dim), data.device)
        if backend == "torch":
            if lengths is None:
                return super().forward(input, hx)
            if hx is None:
                hx = self._unwrap(self._zero_states(data.size(0 if self.batch_first else 1), data))
            nn_forward = super().forward

            def forward_tuple(inp, states):  # the states as a tuple, whatever the nn class returns
                out, final = nn_forward(inp, self._unwrap(states))
                return out, self._wrap(final)

            out, states = packed.torch_module_forward(forward_tuple, input, self._wrap(hx), lengths, self.batch_first)
            return out, self._unwrap(states)
        if is_packed:
            padded, lengths = packed.unpack(input)  # time-major, whatever batch_first says
            if self.batch_first:  # nn ignores batch_first for packed input: present it as batch_first
                padded = padded.transpose(0, 1)
            output, states = self._triton_forward(padded, hx, ac, lengths)
            output = output.transpose(0, 1) if self.batch_first else output
            return packed.repack(output, input), states
        return self._triton_forward(input, hx, ac, lengths)

    def _expected_weight_shapes(self) -> dict[str, tuple]:
        """nn's parameter names and shapes for the module's current settings (nn.RNNBase.__init__)."""
        H = self.hidden_size
        P = self.proj_size or H
        rows = GATES[CELL_IDS[self.mode]] * H
        directions = 2 if self.bidirectional else 1
        shapes = {}
        for layer in range(self.num_layers):
            columns = self.input_size if layer == 0 else P * directions
            for d in range(directions):
                sfx = f"_l{layer}{'_reverse' if d else ''}"
                shapes[f"weight_ih{sfx}"], shapes[f"weight_hh{sfx}"] = (rows, columns), (rows, P)
                if self.bias:
                    shapes[f"bias_ih{sfx}"] = shapes[f"bias_hh{sfx}"] = (rows,)
                if P != H:
                    shapes[f"weight_hr{sfx}"] = (P, H)
        return shapes

    def _read_weights(self) -> dict[str, torch.Tensor]:
        """Every parameter the kernels will read, each read once (a parametrized weight is evaluated
        by the read), present and of nn's shape: a kernel reads as many elements as the shape says
        from the pointer, so a wrong one must never reach it. The shape is the evaluated weight's, as
        a parametrization may store its original in another shape. RuntimeError (nn's type for
        these) naming the parameter."""
        weights = {}
        for name, shape in self._expected_weight_shapes().items():
            w = weights[name] = getattr(self, name, None)
            if w is None:
                raise RuntimeError(
                    f"{name} is missing: the module has num_layers={self.num_layers}, bidirectional="
                    f"{self.bidirectional}, bias={self.bias} but was built with other settings; build a new one")
            if tuple(w.shape) != shape:
                raise RuntimeError(f"{name} must have shape {shape}, got {tuple(w.shape)}")
        return weights

    def _triton_forward(self, input: torch.Tensor, hx, ac: torch.dtype | None, lengths=None):
        # Argument checks mirror nn's forward, so errors have the same types and messages.
        weights = self._read_weights()
        if input.dim() not in (2, 3):
            raise ValueError(self._INPUT_DIM_ERROR.format(name=self.mode.split("_")[0], dim=input.dim()))
        batched = input.dim() == 3
        batch_first = self.batch_first
        batch_dim = 0 if batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
        B = input.size(batch_dim)
        if hx is None:
            states = self._zero_states(B, input)
        else:
            states = self._wrap(hx)
            self._check_state_dims(states, batched)
            if not batched:
                states = tuple(s.unsqueeze(1) for s in states)
        self.check_forward_args(input, self._unwrap(states), None)
        for i, (s, shape) in enumerate(zip(states, self._expected_state_sizes(input))):
            _check_state(f"hidden[{i}]" if len(states) > 1 else "hidden", s, input, tuple(shape))
        if input.size(1 - batch_dim) == 0:
            raise RuntimeError(EMPTY_SEQUENCE)
        # Autocast: nn's rule, every floating tensor but float64 in the autocast dtype.
        input = autocast_cast(input, ac)
        states = tuple(autocast_cast(s, ac) for s in states)
        weights = {name: autocast_cast(w, ac) for name, w in weights.items()}
        names = [f"hidden[{i}]" for i in range(len(states))] if len(states) > 1 else ["hidden"]
        _check_dtypes(input, dict(zip(names, states)), weights)
        with _no_autocast(input, ac is not None):
            output, finals = self._layers(input.transpose(0, 1) if batch_first else input, states, weights, lengths)
        output = output.transpose(0, 1) if batch_first else output
        projected = autocast_projection_dtype(input, self.mode, self.proj_size > 0)
        if projected is not None and ac is not None:  # nn.LSTM's projection under CPU autocast
            output, finals = output.to(projected), (finals[0].to(projected), *finals[1:])
        if not batched:
            output = output.squeeze(batch_dim)
            finals = tuple(f.squeeze(1) for f in finals)
        return output, self._unwrap(finals)

    def _layers(self, x: torch.Tensor, states: tuple, weights: dict, lengths=None):
        """All layers and directions on time-major ``x (T,B,I)``; ``(y (T,B,D·H), finals)``, each final
        state stacked over (L·D). With ``lengths (B,)`` the reverse direction starts at each row's own end."""
        directions = 2 if self.bidirectional else 1
        finals = [[] for _ in states]
        for layer in range(self.num_layers):
            outputs = []
            for d in range(directions):
                idx = layer * directions + d
                sfx = f"_l{layer}{'_reverse' if d else ''}"
                seq = _reverse(x, lengths) if d else x  # the reverse direction reads time backwards
                y, last = self._run_kernel_layer(seq, tuple(s[idx] for s in states), weights, sfx, lengths)
                outputs.append(_reverse(y, lengths) if d else y)
                for acc, s in zip(finals, last):
                    acc.append(s)
            x = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        return x, tuple(torch.stack(acc) for acc in finals)

    def _layer_weights(self, weights: dict, sfx: str):
        """``(w_ih, w_hh, b_ih, b_hh)`` of one layer and direction (biases None without bias)."""
        w_ih, w_hh = weights[f"weight_ih{sfx}"], weights[f"weight_hh{sfx}"]
        b_ih, b_hh = (weights[f"bias_ih{sfx}"], weights[f"bias_hh{sfx}"]) if self.bias else (None, None)
        return w_ih, w_hh, b_ih, b_hh

    # ------------------------------------------------------------------ hooks of a single-state layer
    # (GRU, RNN); the LSTM overrides them for its (h, c).
    _INPUT_DIM_ERROR = "{name}: Expected input to be 2D or 3D, got {dim}D instead"

    def _check_hx_count(self, hx) -> None:
        pass

    def _wrap(self, hx) -> tuple:
        return (hx,)

    def _unwrap(self, states: tuple):
        return states[0]

    def _check_state_dims(self, states: tuple, batched: bool) -> None:
        want = 3 if batched else 2
        if states[0].dim() != want:
            kind = "batched 3-D" if batched else "unbatched 2-D"
            raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got {states[0].dim()}-D tensor")

    def _expected_state_sizes(self, input: torch.Tensor) -> list:
        return [self.get_expected_hidden_size(input, None)]

    def _zero_states(self, B: int, like: torch.Tensor) -> tuple:
        directions = 2 if self.bidirectional else 1
        return (torch.zeros(self.num_layers * directions, B, self.hidden_size, dtype=like.dtype, device=like.device),)

    def _run_kernel_layer(self, seq, states: tuple, weights: dict, sfx: str, lengths):
        """One layer and direction on the kernels: ``(y (T,B,H), final states tuple)``."""
        raise NotImplementedError
