"""Celery worker and beat: decomposition, assignment, expiry and the sweeps."""
