"""``inference-placement bench-scale``: the operator's fleet loop at 1,000-10,000 workloads on a real apiserver.

Real components only: InferenceWorkloads created on the apiserver the kubeconfig names, two real Prometheus servers
over backfilled OpenMetrics (``promtool tsdb create-blocks-from openmetrics``; one with low traffic, one with high),
a loopback switch in front of them (the fleet-wide traffic shift is a flip of the switch), and the operator as a
subprocess (``inference-placement run``) with ``--set cluster.dryRun=true``, so decisions are made and recorded in
status but no Deployment is created. Measured from the operator's own ``/metrics`` and ``/proc``.
"""
