"""The pure core of hubferry: jobs, their state machine, naming, progress and lease rules (no I/O)."""
