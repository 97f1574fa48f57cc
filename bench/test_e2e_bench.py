"""End-to-end: the d2l char LM trained with each provider from identical weights and data order.

Records per-epoch tokens/s and training/validation perplexity, and the final predictions. Every
provider's perplexity must stay within 1% of nn.LSTM's at the same epoch (nn runs first).
"""

import math

import pytest
import torch
from tqdm.auto import tqdm

from bench.providers import IMPL_OF, status
from lstm_triton.model import predict
from lstm_triton.train import TrainConfig, Trainer

PPL_TOLERANCE = 0.01
_nn_perplexity: dict[int, float] = {}  # epoch -> nn.LSTM's training perplexity, this session


def test_e2e_training(benchmark, e2e_provider, profile, device, machine):
    st = status(e2e_provider, device, torch.float32)
    if not st.available:
        pytest.skip(f"{e2e_provider}: {st.reason}")
    impl, fusion = IMPL_OF[e2e_provider]
    e2e = profile.e2e
    cfg = TrainConfig(impl=impl, fusion=fusion, epochs=e2e.epochs, hidden_size=e2e.hidden_size,
                      batch_size=e2e.batch_size, num_steps=e2e.num_steps, max_tokens=e2e.max_tokens,
                      val_tokens=e2e.val_tokens, seed=0)
    trainer = Trainer(cfg, device)
    bar = tqdm(total=cfg.epochs, desc=f"e2e {e2e_provider}", unit="epoch", leave=False)

    def after_epoch(_, row):
        bar.set_postfix(ppl=f"{row['train_perplexity']:.2f}", tok_s=f"{row['tokens_per_sec']:.0f}")
        bar.update(1)

    benchmark.pedantic(lambda: trainer.fit(after_epoch), rounds=1, iterations=1)
    bar.close()
    metrics = trainer.metrics()
    benchmark.extra_info.update({
        "provider": e2e_provider, "mode": "e2e_training", "shape": "d2l-char-lm", "dtype": "fp32",
        "interpreted": st.interpreted, "machine": machine, "config": cfg.__dict__,
        "epochs": metrics.to_dict("records"),
        "tokens_per_sec_median": float(metrics["tokens_per_sec"].median()),
        "predictions": {p: predict(trainer.model, p, 50, trainer.data.vocab, device)
                        for p in ("time traveller", "traveller")},
    })
    ppl = dict(zip(metrics["epoch"], metrics["train_perplexity"]))
    if e2e_provider == "nn":
        _nn_perplexity.update(ppl)
    elif _nn_perplexity:
        worst = max(abs(ppl[e] / _nn_perplexity[e] - 1) for e in ppl)
        benchmark.extra_info["max_ppl_rel_diff_vs_nn"] = worst
        assert worst <= PPL_TOLERANCE, f"{e2e_provider} perplexity differs from nn.LSTM's by {worst:.2%}"
    assert all(math.isfinite(p) for p in ppl.values())
