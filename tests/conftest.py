"""Shared pytest configuration: plugin modules, each owned by one area of the test suite."""

import pytest

pytest_plugins = [
    "tests.plugins.secret_scan",  # first: cloud and operator import it (assertion rewriting needs it registered first)
    "tests.plugins.cloud",
    "tests.plugins.cluster",
    "tests.plugins.envoy",
    "tests.plugins.lambda_runtime",
    "tests.plugins.operator",
    "tests.plugins.prometheus",
    "tests.plugins.live",  # after the plugins whose fixtures its live_stack uses
    "tests.plugins.faults",
]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Live trace replays (``replay``) run last: what they judge (decisions on measured rates, latencies, in-flight
    readings) is what a machine loaded by the rest of the suite bends most. ``make test`` runs the cluster tests
    beside the others; by the time these start, the others have finished."""
    items.sort(key=lambda item: item.get_closest_marker("replay") is not None)
