"""Code shared by the API and the worker. Imports neither Flask nor Celery."""

__version__ = "0.1.0"
