"""Model training and trial evaluation, with no Ray: the code that runs inside a worker.

``batches`` (EpochBatches), ``loop`` (the one DiT training loop and its ``TrialRuntime``
interface), ``proxy_stats`` (the proxy's statistics as a hook of that loop),
``evaluate`` (sample, decode, metrics), ``records`` (TrialSpec / TrialResult),
``trial`` (one sweep trial: train, sample, evaluate, write the result).
"""
