"""The operator reads the chart's PromQL file as shipped, and rejects an unknown key by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_placement.controller.runtime import load_promql_templates
from inference_placement.metrics.prometheus import PrometheusSource
from inference_placement.metrics.promql import PromQLTemplates

CHART_PROMQL = Path(__file__).resolve().parents[1] / "charts" / "inference-placement" / "files" / "promql.yaml"


def test_the_charts_promql_file_configures_the_source() -> None:
    templates, options = load_promql_templates(CHART_PROMQL)
    assert templates == PromQLTemplates()
    assert options == {"namespace_label": "namespace", "workload_label": "workload", "rate_window_seconds": 60}
    PrometheusSource("http://127.0.0.1:9", templates=templates, **options)  # accepted as constructor arguments


def test_unknown_key_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "promql.yaml"
    bad.write_text("requestRate: sum by ($by) (rate(x_total[$rate_window]))\nlatencyP95: x\n")
    with pytest.raises(ValueError, match="latencyP95"):
        load_promql_templates(bad)
