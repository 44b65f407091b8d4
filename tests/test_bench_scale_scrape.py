"""What ``bench-scale`` reads from the operator's own ``/metrics`` to explain a tick: workloads reconciled and the
cyclic collector's full collections, from the text the operator serves."""

from __future__ import annotations

import gc

from inference_placement.controller.telemetry import Telemetry
from inference_placement.devtools.scale.operator import parse_metrics


def test_reconciles_and_full_collections_are_read_from_the_operators_exposition() -> None:
    telemetry = Telemetry()
    before = parse_metrics(telemetry.exposition().decode())
    for seconds in (0.004, 0.02, 0.3):
        telemetry.reconcile_duration.observe(seconds)
    telemetry.reconcile_causes.labels("resync").inc(2)
    telemetry.reconcile_causes.labels("metrics").inc()
    gc.collect()  # a full collection (generation 2)
    after = parse_metrics(telemetry.exposition().decode())
    assert after.reconciles - before.reconciles == 3
    assert after.causes_since(before) == {"metrics": 1.0, "resync": 2.0}
    assert after.full_collections - before.full_collections >= 1
