"""What gets benchmarked, per profile: cells, shapes (named and swept), modes, dtypes, rounds, epochs.

Cells (:data:`CELLS`): ``lstm``, ``gru`` and ``rnn`` (d2l's tanh RNN) in every profile; ``rnn_relu``
(nn.RNN's other nonlinearity) only when asked for (``--bench-cells``). Each cell gets the same
providers, shapes and modes; a profile may leave a shape out for the cells other than the LSTM
(``lstm_only_shapes``) and give them their own end-to-end settings (``cell_e2e``), and says so in
summary.md (:meth:`Profile.cell_plan`).

Profiles: ``gpu`` (the full comparison), ``cpu`` (what a CPU-only machine can do in under 15
minutes on 2 cores, set-up included: naive, nn and the compiled loop timed at the d2l shape and the
sweeps, every cell's char LM trained 30 epochs by naive and nn; Triton runs under the interpreter
there, as correctness runs), ``tiny`` (CI: every code path once, in seconds). Each profile also sets
the variable-length benchmark (:class:`VarlenConfig`, bench/varlen.py): the full sweep on a GPU; on
a CPU only nn.LSTM packed vs padded at one small T plus one interpreted correctness run (~25 s).

Where the ``cpu`` profile saves time (it tells a CPU user least; sized on the slower of this
project's 2-core machines, an AMD EPYC without AVX-512, where nn.LSTM trains the char LM at ~16k
tokens/s): no large shape (B=16, T=1024, H=768: seconds per round and ~5 minutes for naive and nn);
the char LM 30 epochs, not d2l's 500 (perplexity ~17 instead of 1.1: the runs compare throughput
and equal perplexity, not convergence, which the gpu profile and ``lstm-triton train --epochs 500``
show); interpreted Triton (a correctness run whose clock is no performance figure) gets one round,
no warm-up, forward+backward only (it runs forward inside), and trains the char LM 1 epoch at the
persistent level only (the cell and step levels train end to end in the tiny profile of make test
and on a GPU; here they are checked layer by layer). :meth:`Profile.cell_plan` says so in
summary.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("forward", "forward_backward", "train_step")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

# Benchmark cell name -> (cell, nonlinearity) of lstm_triton.charlm (TrainConfig, layer_from_weights).
# "rnn" is d2l's RNN (tanh). "rnn_relu" runs the same kernels with relu as the compile-time
# activation (kernels/cell_math.py): the same GEMMs and memory traffic as tanh, so it is no
# separate performance point, and d2l has no relu char LM; it runs only when asked for.
CELLS = {"lstm": ("lstm", "tanh"), "gru": ("gru", "tanh"), "rnn": ("rnn", "tanh"), "rnn_relu": ("rnn", "relu")}
DEFAULT_CELLS = ("lstm", "gru", "rnn")
CELL_TITLES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN (tanh)", "rnn_relu": "RNN (relu)"}
NN_CLASS_NAMES = {"lstm": "nn.LSTM", "gru": "nn.GRU", "rnn": "nn.RNN", "rnn_relu": "nn.RNN"}


def cell_args(cell: str) -> tuple[str, str]:
    """``(cell, nonlinearity)`` of a benchmark cell name; ValueError naming the choices."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
    return CELLS[cell]


@dataclass(frozen=True)
class Shape:
    name: str  # "d2l", "large", or the sweep axis ("batch", "hidden", "seq_len")
    T: int
    B: int
    I: int
    H: int

    @property
    def sweep_value(self) -> int | None:
        return {"batch": self.B, "hidden": self.H, "seq_len": self.T}.get(self.name)

    @property
    def label(self) -> str:
        return f"{self.name}-T{self.T}-B{self.B}-I{self.I}-H{self.H}"


@dataclass(frozen=True)
class E2EConfig:
    """End-to-end char-LM training. ``epochs`` for timed providers; ``interpreted_epochs`` for
    Triton under the interpreter (None: the same); every provider's training perplexity must stay
    within 1% of nn.LSTM's over the first ``check_epochs`` epochs. Beyond them fp32 rounding
    differences grow as the runs leave the plateau, so later gaps are reported, not asserted."""

    epochs: int
    interpreted_epochs: int | None = None
    check_epochs: int = 10
    hidden_size: int | None = None  # None: d2l's for the cell (256 for LSTM and GRU, 512 for the RNN)
    batch_size: int = 32
    num_steps: int = 35
    max_tokens: int = 10_000
    val_tokens: int = 5_000
    predict_chars: int = 50  # d2l's greedy continuation after each prefix (one interpreted step a character)


@dataclass(frozen=True)
class VarlenConfig:
    """Variable-length batches (bench/varlen.py): lengths uniform in [T/4, T] for each T in ``Ts``,
    B sequences, input size I, hidden size H. ``timed`` providers run at every T, mode and dtype;
    Triton under the interpreter runs only ``interpreted`` (provider, mode) pairs at
    ``interpreted_T`` (correctness runs: one round, never a timing)."""

    Ts: tuple[int, ...]
    B: int
    I: int
    H: int
    timed: tuple[str, ...] = ("nn", "nn-padded", "triton-cell", "triton-step", "triton-persistent", "triton-padded")
    interpreted: tuple[tuple[str, str], ...] = ()
    interpreted_T: int | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    named: tuple[Shape, ...]  # benchmarked in every mode
    sweeps: tuple[Shape, ...]  # forward_backward only
    dtypes: tuple[str, ...]
    rounds: int
    e2e: E2EConfig
    interpreted_shapes: tuple[str, ...] = ("d2l",)  # where interpreted Triton providers still run
    interpreted_modes: tuple[str, ...] = MODES  # the modes interpreted Triton layer cases run in
    # the Triton providers that train the char LM under the interpreter (None: every level)
    interpreted_e2e: tuple[str, ...] | None = None
    warmup_rounds: int = 1  # timed warm-up rounds after the untimed warm-up call
    varlen: VarlenConfig | None = None  # variable-length batches, LSTM only (None: not benchmarked)
    cells: tuple[str, ...] = DEFAULT_CELLS  # benchmarked cells, LSTM first
    lstm_only_shapes: tuple[str, ...] = ()  # shape names (named, or sweep axes) the other cells leave out
    cell_e2e: tuple[tuple[str, E2EConfig], ...] = ()  # end-to-end settings of a cell other than ``e2e``
    # Peers (bench/peers/: compiled, torchrl-triton, flashrnn) run at these named shapes and modes
    # only (no sweeps: each new shape compiles again); ``peers_left_out``: (peer, cell or "*", why)
    # for what the profile skips although the peer could run it.
    peer_shapes: tuple[str, ...] = ("d2l", "large")
    peer_modes: tuple[str, ...] = MODES
    peers_left_out: tuple[tuple[str, str, str], ...] = ()
    # The robustness check (x ×100, forward+backward vs float64 torch.nn) at these named shapes; for
    # Triton under the interpreter only where ``robustness_interpreted``.
    robustness_shapes: tuple[str, ...] = ("d2l",)
    robustness_interpreted: bool = True

    def e2e_for(self, cell: str) -> E2EConfig:
        """The end-to-end settings of ``cell`` (``e2e`` unless ``cell_e2e`` names the cell)."""
        return dict(self.cell_e2e).get(cell, self.e2e)

    def shapes_for(self, cell: str, shapes: tuple[Shape, ...]) -> tuple[Shape, ...]:
        return shapes if cell == "lstm" else tuple(s for s in shapes if s.name not in self.lstm_only_shapes)

    def cell_plan(self, cell: str) -> str:
        """What summary.md says of this profile for ``cell``: where it differs from the LSTM, then
        what it leaves out for interpreted Triton ('' where neither applies)."""
        return " ".join(part for part in (self._cell_difference(cell), self.interpreted_plan()) if part)

    def _cell_difference(self, cell: str) -> str:
        if cell == "lstm":
            return ""
        parts = []
        named = [s.name for s in self.named if s.name in self.lstm_only_shapes]
        sweeps = list(dict.fromkeys(s.name for s in self.sweeps if s.name in self.lstm_only_shapes))
        if named:
            parts.append(f"leaves out the {' and '.join(named)} {'shape' if len(named) == 1 else 'shapes'}")
        if sweeps:
            parts.append(f"leaves out the {', '.join(sweeps)} {'sweep' if len(sweeps) == 1 else 'sweeps'}")
        e2e = self.e2e_for(cell)

        def epochs(cfg: E2EConfig) -> str:
            interp = (f"interpreted Triton {cfg.interpreted_epochs}, "
                      if cfg.interpreted_epochs not in (None, cfg.epochs) else "")
            return f"{cfg.epochs} epochs ({interp}perplexity checked against nn over {cfg.check_epochs})"

        lstm = ["every shape" if self.lstm_only_shapes else "the same shapes"]
        if e2e != self.e2e:
            parts.append(f"trains the char LM {epochs(e2e)}")
            lstm.append(epochs(self.e2e))
        if not parts:
            return ""
        return (f"For {CELL_TITLES.get(cell, cell)} the {self.name} profile {' and '.join(parts)} to keep the "
                f"run short; the LSTM gets {' and '.join(lstm)}.")

    def interpreted_plan(self) -> str:
        """One sentence: which modes and which char-LM runs this profile gives Triton under the
        interpreter, where it leaves some out ('' where it runs them all)."""
        parts = []
        if tuple(self.interpreted_modes) != MODES:
            modes = " and ".join(m.replace("_", "+") for m in self.interpreted_modes)
            parts.append(f"checks each level layer by layer at the {'/'.join(self.interpreted_shapes)} shape in "
                         f"{modes} only")
        if self.interpreted_e2e is not None:
            levels = [p.removeprefix("triton-") for p in self.interpreted_e2e]
            where = (f"at the {' and '.join(levels)} level{'s' * (len(levels) > 1)} only" if levels
                     else "at no level")
            parts.append(f"trains the char LM {where} (every level trains in make test's tiny profile and on a GPU)")
        if not parts:
            return ""
        return f"Where Triton runs under the interpreter, the {self.name} profile {' and '.join(parts)}."

    def runs_interpreted(self, shape_name: str, mode: str) -> bool:
        """Whether an interpreted Triton layer case at ``shape_name`` in ``mode`` runs here."""
        return shape_name in self.interpreted_shapes and mode in self.interpreted_modes

    def trains_interpreted(self, provider: str) -> bool:
        """Whether Triton ``provider`` trains the char LM here when it runs under the interpreter."""
        return self.interpreted_e2e is None or provider in self.interpreted_e2e

    def runs_peer(self, shape_name: str, mode: str) -> bool:
        """Whether this profile has peer layer cases at ``shape_name`` in ``mode``."""
        return shape_name in self.peer_shapes and mode in self.peer_modes

    def peer_skip(self, provider: str, cell: str) -> str | None:
        """Why this profile leaves peer ``provider``'s ``cell`` out (None: it runs where runs_peer says)."""
        return next((why for peer, c, why in self.peers_left_out if peer == provider and c in (cell, "*")), None)

    def rounds_for(self, shape_name: str, interpreted: bool) -> tuple[int, int]:
        """(rounds, warmup_rounds) for one layer case: interpreter runs are correctness runs,
        timed once."""
        if interpreted:
            return 1, 0
        return self.rounds, self.warmup_rounds

    def e2e_epochs(self, interpreted: bool, cell: str = "lstm") -> int:
        e2e = self.e2e_for(cell)
        if interpreted and e2e.interpreted_epochs is not None:
            return e2e.interpreted_epochs
        return e2e.epochs


def _sweep(axis: str, values, T: int, B: int, H: int, I: int | None = None) -> tuple[Shape, ...]:
    shapes = []
    for v in values:
        t, b, h = (v, B, H) if axis == "seq_len" else ((T, v, H) if axis == "batch" else (T, B, v))
        shapes.append(Shape(axis, t, b, I if I is not None else h, h))
    return tuple(shapes)


D2L = Shape("d2l", T=35, B=32, I=28, H=256)
LARGE = Shape("large", T=1024, B=16, I=768, H=768)
# the tiny profile: every cell's end-to-end run at one small size
_TINY_E2E = E2EConfig(epochs=2, interpreted_epochs=1, check_epochs=1, hidden_size=16, batch_size=4, num_steps=6,
                      max_tokens=100, val_tokens=50, predict_chars=5)

PROFILES = {
    "gpu": Profile(
        "gpu", named=(D2L, LARGE),
        sweeps=_sweep("batch", (1, 4, 16, 64, 256), 128, 0, 256)
        + _sweep("hidden", (64, 128, 256, 512, 768, 1024), 128, 16, 0)
        + _sweep("seq_len", (16, 64, 256, 1024), 0, 16, 256),
        dtypes=("fp32", "bf16"), rounds=20, e2e=E2EConfig(epochs=500, check_epochs=10),
        varlen=VarlenConfig(Ts=(64, 128, 256, 512, 1024), B=64, I=512, H=512),
    ),
    "cpu": Profile(
        "cpu", named=(D2L,),
        sweeps=_sweep("batch", (4, 16, 64), 35, 0, 128)
        + _sweep("hidden", (64, 128, 256, 512), 35, 16, 0)
        + _sweep("seq_len", (16, 64, 256), 0, 16, 128),
        # 7 rounds: medians of 3 were noise on this machine (RNN naive's train_step below its own
        # forward+backward; the compiled LSTM 117 ms in make bench, 70 ms rerun alone)
        dtypes=("fp32",), rounds=7, e2e=E2EConfig(epochs=30, interpreted_epochs=1, check_epochs=1),
        # ~20 s on 2 cores: nn.LSTM packed vs padded at one small T, and one interpreted correctness run
        varlen=VarlenConfig(Ts=(64,), B=16, I=64, H=64, timed=("nn", "nn-padded"),
                            interpreted=(("triton-step", "forward_backward"),), interpreted_T=64),
        # Sized from one run of the previous profile on the AMD EPYC (2026-12-05, seconds): the char LM
        # at 500 epochs, naive 665 + nn 360 for the LSTM alone; the large shape 307 (naive 169, nn 138);
        # the interpreted char LM 664 over nine runs (step: LSTM 186, GRU 82, RNN 115; persistent 114,
        # 41, 26; cell 66, 24, 10); interpreted layer cases 200, of which forward+backward 78; the
        # compiled loop 102; 25 min in all. What stays: the compiled loop ~100, the char LM 30 epochs
        # ~140 for the three cells, the persistent level's interpreted char LM ~120 (1 epoch), the
        # interpreted forward+backward cases ~80, the rest ~80: ~9 min, and make setup's ~2.
        interpreted_modes=("forward_backward",),
        interpreted_e2e=("triton-persistent",),
        # Peers: the compiled loop's first call compiles for 95-112 s a shape and cell on 2 cores (inductor,
        # T=35 unrolled), so the CPU profile compiles the LSTM at the d2l shape, forward+backward only.
        # TorchRL and FlashRNN need CUDA: listed with the reason. The robustness check (x ×100) runs for
        # the timed providers; the interpreted ones get it on a GPU (and in the tiny profile).
        peer_shapes=("d2l",), peer_modes=("forward_backward",),
        peers_left_out=tuple(("compiled", cell, "inductor compiles for 1.5-2 min per cell and shape on 2 cores; "
                              "make bench's CPU profile compiles the LSTM only (15-minute budget)")
                             for cell in ("gru", "rnn", "rnn_relu")),
        robustness_interpreted=False,
    ),
    "tiny": Profile(
        "tiny", named=(Shape("d2l", 5, 3, 7, 20),),
        sweeps=_sweep("batch", (1, 3), 4, 0, 12) + _sweep("hidden", (8, 17), 4, 2, 0)
        + _sweep("seq_len", (2, 5), 0, 2, 12),
        dtypes=("fp32",), rounds=1,
        # every cell's end-to-end run at the same size: 2 epochs on 100 tokens, 1 of them interpreted
        # (the interpreted LSTM run on 400 tokens × 2 epochs cost 2 of make test's CPU minutes)
        e2e=_TINY_E2E,
        # interpreted Triton at the named shape only (the default): the sweeps run the same harness code,
        # and their odd sizes are the kernel tests' (~40 s of make test's CPU less)
        warmup_rounds=0,
        varlen=VarlenConfig(Ts=(4, 8), B=3, I=5, H=6, interpreted=tuple(
            (p, m) for p in ("triton-cell", "triton-step", "triton-persistent", "triton-padded")
            for m in ("forward", "forward_backward")), interpreted_T=8),
        # GRU and RNN (make test's budget): the named shape in every mode (the sweeps run the same
        # code as the LSTM's)
        lstm_only_shapes=("batch", "hidden", "seq_len"),
        cell_e2e=tuple((cell, _TINY_E2E) for cell in ("gru", "rnn", "rnn_relu")),
        # peers at the named shape, forward+backward: the code path once; the compiled loop's inductor
        # compile (~10+ s even here) is left to the cpu profile and tests/test_bench_peers.py (aot_eager)
        peer_shapes=("d2l",), peer_modes=("forward_backward",),
        peers_left_out=(("compiled", "*", "inductor's compile costs make test tens of CPU-seconds; the cpu profile "
                         "(make bench) times it and tests/test_bench_peers.py checks it with aot_eager"),),
    ),
}


def resolve_profile(name: str) -> Profile:
    if name == "auto":
        name = "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"--bench-profile must be one of auto, {', '.join(PROFILES)}, got {name!r}")
    return PROFILES[name]


def resolve_cells(profile: Profile, requested: str | None = None) -> tuple[str, ...]:
    """The cells to benchmark: ``requested`` (comma-separated names of :data:`CELLS`) or the
    profile's (``requested`` None), in :data:`CELLS` order (LSTM first). ValueError naming unknown
    cells, or an empty choice."""
    chosen = [c.strip() for c in requested.split(",") if c.strip()] if requested is not None else list(profile.cells)
    unknown = [c for c in chosen if c not in CELLS]
    if unknown or not chosen:
        raise ValueError(f"cells must be a comma-separated subset of {', '.join(CELLS)}, got {requested!r}")
    return tuple(c for c in CELLS if c in chosen)


@dataclass(frozen=True)
class LayerCase:
    provider: str
    mode: str
    shape: Shape
    dtype: str
    cell: str = "lstm"

    @property
    def id(self) -> str:
        return f"{self.cell}-{self.provider}-{self.mode}-{self.shape.label}-{self.dtype}"


def layer_cases(profile: Profile, providers, cells: tuple[str, ...] | None = None,
                peers: tuple[str, ...] = ()) -> list[LayerCase]:
    """Every (cell, dtype, shape, mode, provider) layer case, cell by cell (LSTM first); the
    ``peers`` among ``providers`` only where the profile runs them (:meth:`Profile.runs_peer`)."""
    cases = []
    for cell in cells if cells is not None else profile.cells:
        for dtype in profile.dtypes:
            for shape in profile.shapes_for(cell, profile.named):
                cases += [LayerCase(p, m, shape, dtype, cell) for m in MODES for p in providers
                          if p not in peers or profile.runs_peer(shape.name, m)]
            for shape in profile.shapes_for(cell, profile.sweeps):
                cases += [LayerCase(p, "forward_backward", shape, dtype, cell) for p in providers
                          if p not in peers or profile.runs_peer(shape.name, "forward_backward")]
    return cases


@dataclass(frozen=True)
class E2ECase:
    cell: str
    provider: str

    @property
    def id(self) -> str:
        return f"{self.cell}-{self.provider}"


def e2e_cases(profile: Profile, providers, cells: tuple[str, ...] | None = None) -> list[E2ECase]:
    """End-to-end training runs, cell by cell; within a cell nn first (the others' perplexity is
    compared with it in the same run)."""
    ordered = sorted(providers, key=lambda p: p != "nn")
    return [E2ECase(cell, p) for cell in (cells if cells is not None else profile.cells) for p in ordered]


@dataclass(frozen=True)
class VarlenCase:
    provider: str
    mode: str
    T: int
    B: int
    I: int
    H: int
    dtype: str

    @property
    def id(self) -> str:
        return f"varlen-{self.provider}-{self.mode}-T{self.T}-B{self.B}-I{self.I}-H{self.H}-{self.dtype}"


def varlen_cases(profile: Profile, providers) -> list[VarlenCase]:
    """Every (provider, mode, T, dtype) of the profile's variable-length benchmark, for the chosen
    ``providers`` (names of bench.varlen.VARLEN_PROVIDERS). Whether a Triton provider is timed or
    interpreted is decided when it runs (the test skips what the profile leaves out)."""
    cfg = profile.varlen
    if cfg is None:
        return []
    return [VarlenCase(p, m, T, cfg.B, cfg.I, cfg.H, dtype) for dtype in profile.dtypes for T in cfg.Ts
            for m in ("forward", "forward_backward") for p in providers]
