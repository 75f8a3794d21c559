"""The `orchestrator` console script: the client's commands (orchestrator_client) and the
operator's housekeeping (db, token, flower), which need the server's settings."""
