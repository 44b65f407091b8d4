"""Developer tooling around the operator, not part of it: the demo, the fleet-scale benchmark, live trace replays.

The import contracts (``.importlinter``) place this package above everything else: it may use the operator's
modules, and none of them (the controller, targets, routing, metrics, policy, api, sim) may import it, so the
operator's ``run`` path never loads it. ``inference_placement.cli`` registers its commands (``demo``,
``bench-scale``) with imports inside them.

``processes``    the one process harness: free loopback ports, waiting for HTTP, starting and stopping by PID
``prometheus``   real Prometheus servers (backfilled or scraping) and a loopback switch in front of them
``local_stack``  the demo's loopback processes: model-server stand-ins and the Envoy router
``demo``         ``inference-placement demo``: the whole product end to end, a live replay, the simulation
``replay``       live replays of real traces (choosing a segment, driving HTTP load through the stable endpoint)
``scale``        ``inference-placement bench-scale``: the fleet loop at 1,000-10,000 workloads
"""
