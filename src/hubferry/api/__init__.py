"""The REST API (FastAPI): jobs, their progress and timeline, cancel and retry."""
