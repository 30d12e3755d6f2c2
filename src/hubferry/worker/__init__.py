"""Task execution: a typed wrapper over Huey, the consumer, and the reconcile loop."""
