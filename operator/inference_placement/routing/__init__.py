"""The stable endpoint of every workload and its traffic weights: Envoy config rendered as data.

``model`` derives a ``Route`` (upstreams and weights) from a workload's status; ``envoy`` renders the bootstrap, the
CDS/RDS resources and a composed static config for validation; ``manifests`` renders the in-cluster router's
Kubernetes objects; ``xds_files`` is the only module with I/O: it moves the files into place in the safe order and
confirms each move through Envoy's admin stats.
"""
