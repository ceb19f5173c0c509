"""Shared fixtures and the registry-driven parametrization of the test suite."""
