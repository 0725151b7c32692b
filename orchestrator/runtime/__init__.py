"""Everything that talks to Ray: cluster start, Train runs, actor pools, resources, workarounds.

``cluster`` (init_ray, actor-pool maps), ``train`` (fit_torch, call_isolated,
TrainRuntime), ``tune`` (a single-worker trial inside its Tune trainable), ``resources``
(ResourcePlan), ``quiet`` (output settings and library-warning filters), ``workarounds``
(every Ray workaround, with its reason and the Ray version it was seen on).
"""
