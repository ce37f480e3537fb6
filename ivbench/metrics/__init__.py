"""Metrics: turn records into numbers. Each declares what it needs (see `base`)."""
