"""Orchestration: launch, observe and publish jobs (calls the domain, then the adapters)."""
