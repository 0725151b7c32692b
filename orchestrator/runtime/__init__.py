"""Everything that talks to Ray: cluster start, Train runs, actor pools, resources, workarounds.

``cluster`` (init_ray, actor-pool maps), ``train`` (fit_torch, call_isolated,
TrainRuntime), ``resources`` (ResourcePlan), ``workarounds`` (every Ray workaround,
with its reason and the Ray version it was seen on).
"""
