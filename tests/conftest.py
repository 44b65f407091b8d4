"""Shared pytest configuration: plugin modules, each owned by one area of the test suite."""

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
