"""Traffic metrics: the batched Prometheus source and its PromQL templates."""
