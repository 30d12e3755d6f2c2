"""Live training progress read from the trainers' own logs."""

from hubferry.tracking.parsers import Reading, parse_line
from hubferry.tracking.progress import ProgressTracker, Snapshot, parse_log

__all__ = ["ProgressTracker", "Reading", "Snapshot", "parse_line", "parse_log"]
