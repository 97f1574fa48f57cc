"""End-to-end: the d2l char LM of each cell trained with each provider from identical weights and
data order.

Records per-epoch tokens/s and training/validation perplexity, and the final predictions (d2l's
greedy ``predict`` after the prefixes 'time traveller' and 'traveller', 50 characters; the tiny
profile 5). Each cell has d2l's chapter settings (hidden 256 for LSTM and GRU, 512 for the RNN
unless the profile sets one) and the profile's epochs for it (``profile.e2e_for(cell)``): timed
providers train ``epochs`` (500 on a GPU: d2l's convergence; 30 on the cpu profile); Triton under
the interpreter trains ``interpreted_epochs`` (a correctness run), at the levels the profile names
(``profile.trains_interpreted``). Over the first ``check_epochs`` epochs every provider's
training perplexity must stay within 1% of torch.nn's layer of the same cell at the same epoch (nn
runs first within each cell); the gap over all shared epochs is recorded, not asserted, because
fp32 rounding differences between implementations can grow over a long run.
"""

import math

import pytest
import torch
from tqdm.auto import tqdm

from bench.cases import NN_CLASS_NAMES, cell_args
from bench.providers import IMPL_OF, fusion_ran, status
from lstm_triton.charlm.model import predict
from lstm_triton.charlm.train import TrainConfig, Trainer

PPL_TOLERANCE = 0.01
PREFIXES = ("time traveller", "traveller")
_nn_perplexity: dict[str, dict[int, float]] = {}  # cell -> epoch -> nn's training perplexity, this session


def max_rel_gap(ppl: dict[int, float], ref: dict[int, float], last_epoch: int | None = None) -> float:
    """max |ppl/ref - 1| over the epochs both have (up to ``last_epoch``); NaN if none; inf if a
    perplexity is not finite (so a NaN run never passes)."""
    epochs = [e for e in ppl if e in ref and (last_epoch is None or e <= last_epoch)]
    if not epochs:
        return math.nan
    gaps = [abs(ppl[e] / ref[e] - 1) for e in epochs]
    return max(g if math.isfinite(g) else math.inf for g in gaps)


def test_e2e_training(benchmark, e2e_case, profile, device, machine):
    cell, e2e_provider = e2e_case.cell, e2e_case.provider
    st = status(e2e_provider, device, torch.float32)
    if not st.available:
        pytest.skip(f"{e2e_provider}: {st.reason}")
    if st.interpreted and not profile.trains_interpreted(e2e_provider):
        pytest.skip(f"{e2e_provider}: runs under the Triton interpreter here; the {profile.name} profile trains "
                    f"{', '.join(profile.interpreted_e2e) or 'no Triton level'} only (a correctness run)")
    impl, fusion = IMPL_OF[e2e_provider]
    e2e = profile.e2e_for(cell)
    name, nonlinearity = cell_args(cell)
    cfg = TrainConfig(impl=impl, fusion=fusion, epochs=profile.e2e_epochs(st.interpreted, cell),
                      hidden_size=e2e.hidden_size, batch_size=e2e.batch_size, num_steps=e2e.num_steps,
                      max_tokens=e2e.max_tokens, val_tokens=e2e.val_tokens, seed=0, cell=name,
                      nonlinearity=nonlinearity)
    trainer = Trainer(cfg, device)
    bar = tqdm(total=cfg.epochs, desc=f"e2e {cell} {e2e_provider}", unit="epoch", leave=False)

    def after_epoch(_, row):
        bar.set_postfix(ppl=f"{row['train_perplexity']:.2f}", tok_s=f"{row['tokens_per_sec']:.0f}")
        bar.update(1)

    benchmark.pedantic(lambda: trainer.fit(after_epoch), rounds=1, iterations=1)
    bar.close()
    metrics = trainer.metrics()
    benchmark.extra_info.update({
        "cell": cell, "provider": e2e_provider, "mode": "e2e_training", "shape": "d2l-char-lm", "dtype": "fp32",
        "fusion_requested": fusion if impl == "triton" else None,
        "fusion": fusion_ran(e2e_provider, cell, cfg.batch_size, cfg.hidden_size, torch.float32, device),
        "interpreted": st.interpreted, "machine": machine, "config": cfg.__dict__,
        "check_epochs": e2e.check_epochs, "cell_plan": profile.cell_plan(cell),
        "epochs": metrics.to_dict("records"),
        "tokens_per_sec_median": float(metrics["tokens_per_sec"].median()),
        "predict_chars": e2e.predict_chars,
        "predictions": {p: predict(trainer.model, p, e2e.predict_chars, trainer.data.vocab, device) for p in PREFIXES},
    })
    ppl = dict(zip(metrics["epoch"], metrics["train_perplexity"]))
    assert all(math.isfinite(p) for p in ppl.values()), f"{cell} {e2e_provider}: non-finite training perplexity"
    if e2e_provider == "nn":
        _nn_perplexity[cell] = ppl
    elif cell in _nn_perplexity:
        ref = _nn_perplexity[cell]
        worst = max_rel_gap(ppl, ref, e2e.check_epochs)
        benchmark.extra_info["max_ppl_rel_diff_vs_nn"] = worst
        benchmark.extra_info["max_ppl_rel_diff_vs_nn_all_epochs"] = max_rel_gap(ppl, ref)
        assert worst <= PPL_TOLERANCE, (f"{cell} {e2e_provider} perplexity differs from {NN_CLASS_NAMES[cell]}'s "
                                        f"by {worst:.2%} within the first {e2e.check_epochs} epochs")
