"""What gets benchmarked, per profile: shapes (named and swept), modes, dtypes, rounds, epochs.

Profiles: ``gpu`` (the full comparison), ``cpu`` (what a CPU-only machine can do in under 15
minutes on 2 cores: naive and nn train the char LM to d2l's convergence, 500 epochs; Triton
providers run under the interpreter there, at the d2l shape only and 10 epochs, as correctness
runs), ``tiny`` (CI: every code path once, in seconds). Each profile also sets the
variable-length benchmark (:class:`VarlenConfig`, bench/varlen.py): the full sweep on a GPU; on a
CPU only nn.LSTM packed vs padded at one small T plus one interpreted correctness run (~25 s).

Where the ``cpu`` profile saves time (it tells a CPU user least): interpreted cases get one
round and no warm-up round (their clock is no performance figure); the large
shape (seconds per round on a CPU) gets one round and no warm-up round (the untimed ``run()``
before the clock already warms the allocator; on a CPU there is nothing to compile).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("forward", "forward_backward", "train_step")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


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
    hidden_size: int = 256
    batch_size: int = 32
    num_steps: int = 35
    max_tokens: int = 10_000
    val_tokens: int = 5_000


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
    warmup_rounds: int = 1  # timed warm-up rounds after the untimed warm-up call
    large_rounds: int | None = None  # rounds at the "large" shape, no warm-up round (None: as elsewhere)
    varlen: VarlenConfig | None = None  # variable-length batches (None: not benchmarked)

    def rounds_for(self, shape_name: str, interpreted: bool) -> tuple[int, int]:
        """(rounds, warmup_rounds) for one layer case: interpreter runs are correctness runs,
        timed once; the large shape may take fewer rounds."""
        if interpreted:
            return 1, 0
        if shape_name == "large" and self.large_rounds:
            return self.large_rounds, 0  # seconds per round: the untimed warm-up call suffices
        return self.rounds, self.warmup_rounds

    def e2e_epochs(self, interpreted: bool) -> int:
        if interpreted and self.e2e.interpreted_epochs is not None:
            return self.e2e.interpreted_epochs
        return self.e2e.epochs


def _sweep(axis: str, values, T: int, B: int, H: int, I: int | None = None) -> tuple[Shape, ...]:
    shapes = []
    for v in values:
        t, b, h = (v, B, H) if axis == "seq_len" else ((T, v, H) if axis == "batch" else (T, B, v))
        shapes.append(Shape(axis, t, b, I if I is not None else h, h))
    return tuple(shapes)


D2L = Shape("d2l", T=35, B=32, I=28, H=256)
LARGE = Shape("large", T=1024, B=16, I=768, H=768)

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
        "cpu", named=(D2L, LARGE),
        sweeps=_sweep("batch", (4, 16, 64), 35, 0, 128)
        + _sweep("hidden", (64, 128, 256, 512), 35, 16, 0)
        + _sweep("seq_len", (16, 64, 256), 0, 16, 128),
        dtypes=("fp32",), rounds=3, e2e=E2EConfig(epochs=500, interpreted_epochs=10, check_epochs=10),
        large_rounds=1,
        # ~20 s on 2 cores: nn.LSTM packed vs padded at one small T, and one interpreted correctness run
        varlen=VarlenConfig(Ts=(64,), B=16, I=64, H=64, timed=("nn", "nn-padded"),
                            interpreted=(("triton-step", "forward_backward"),), interpreted_T=64),
    ),
    "tiny": Profile(
        "tiny", named=(Shape("d2l", 5, 3, 7, 20),),
        sweeps=_sweep("batch", (1, 3), 4, 0, 12) + _sweep("hidden", (8, 17), 4, 2, 0)
        + _sweep("seq_len", (2, 5), 0, 2, 12),
        dtypes=("fp32",), rounds=1,
        e2e=E2EConfig(epochs=3, interpreted_epochs=2, check_epochs=2, hidden_size=16, batch_size=4, num_steps=6,
                      max_tokens=400, val_tokens=120),
        interpreted_shapes=("d2l", "batch", "hidden", "seq_len"), warmup_rounds=0,
        varlen=VarlenConfig(Ts=(4, 8), B=3, I=5, H=6, interpreted=tuple(
            (p, m) for p in ("triton-cell", "triton-step", "triton-persistent", "triton-padded")
            for m in ("forward", "forward_backward")), interpreted_T=8),
    ),
}


def resolve_profile(name: str) -> Profile:
    if name == "auto":
        name = "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"--bench-profile must be one of auto, {', '.join(PROFILES)}, got {name!r}")
    return PROFILES[name]


@dataclass(frozen=True)
class LayerCase:
    provider: str
    mode: str
    shape: Shape
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.provider}-{self.mode}-{self.shape.label}-{self.dtype}"


def layer_cases(profile: Profile, providers) -> list[LayerCase]:
    cases = []
    for dtype in profile.dtypes:
        for shape in profile.named:
            cases += [LayerCase(p, m, shape, dtype) for m in MODES for p in providers]
        for shape in profile.sweeps:
            cases += [LayerCase(p, "forward_backward", shape, dtype) for p in providers]
    return cases


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
