"""Model training and trial evaluation, with no Ray: the code that runs inside a worker.

``loop`` (the one DiT training loop, its ``TrialRuntime`` interface and ``EpochBatches``),
``proxy_stats`` (the proxy's statistics as a hook of that loop), ``evaluate`` (sample,
decode, metrics), ``spaces`` (the per-dataset ``classifier`` evaluation space),
``records`` (TrialSpec / TrialResult), ``trial`` (one sweep trial: train, sample,
evaluate, write the result).
"""
