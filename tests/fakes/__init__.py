"""Fakes of outside services for the tests (importable as ``fakes``: the root conftest puts ``tests/`` on sys.path)."""
