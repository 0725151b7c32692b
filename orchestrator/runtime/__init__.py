"""Everything that talks to Ray: cluster start, Train runs, actor pools, resources, workarounds.

``executor`` (the Executor interface, the local executor: no Ray), ``ray_executor``
(RayExecutor), ``cluster`` (init_ray, current_plan, actor-pool maps), ``train`` (fit_torch,
call_isolated, TrainRuntime), ``tune`` (a single-worker trial inside its Tune trainable),
``resources`` (ResourcePlan, no Ray), ``quiet`` (output settings and library-warning
filters), ``workarounds`` (every Ray workaround, with its reason and the Ray version it was
seen on), ``worker_setup`` (Ray's worker set-up hook). ``executor`` and ``resources`` are on
the local executor's path and import no Ray, nor does ``worker_setup`` (it runs at every Ray
worker's start); the others import Ray at their top.
"""
