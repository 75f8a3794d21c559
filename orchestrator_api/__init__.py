"""The HTTP and WebSocket API. Persists through shared/services and enqueues jobs by name."""
