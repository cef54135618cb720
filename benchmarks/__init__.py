"""busjax benchmarks: cross-validation tables, speed, device scaling, summaries.

  python -m benchmarks.cv         # models x folds (x datasets) -> results JSONL
  python -m benchmarks.summarize  # results JSONL -> Markdown/CSV tables, PNG plots
  python -m benchmarks.speed      # params, GFLOPs, compile time, train/infer throughput
  python -m benchmarks.scaling    # data-parallel throughput against the device count

See benchmarks/README.md. This package imports nothing heavy at import time
(``benchmarks.scaling`` must set ``XLA_FLAGS`` before JAX is imported).
"""
