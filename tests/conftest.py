"""Shared pytest configuration: plugin modules, each owned by one area of the test suite."""

pytest_plugins = [
    "tests.plugins.cloud",
    "tests.plugins.cluster",
    "tests.plugins.envoy",
    "tests.plugins.operator",
    "tests.plugins.prometheus",
]
