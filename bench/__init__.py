"""Benchmark suite: pytest-benchmark runs (naive loop, nn.LSTM, Triton levels) and the report builder."""
