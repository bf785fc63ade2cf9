"""Helpers for tests, benchmarks and the local run (never used by a deployed service)."""
