"""Test-double tooling: an in-process broker, fixtures and a pytest plugin (see docs/testing.md)."""
