"""The spec at /openapi.json describes every route a client can call, the open ones
included, and its description (atop /docs) tells the WebSocket streams and every event."""

from shared import events


def test_the_open_routes_are_in_the_spec(client):
    spec = client.get("/openapi.json").json
    for path in ("/health", "/ready", "/metrics"):
        operation = spec["paths"][path]["get"]
        assert operation["security"] == [], path  # no token needed
        assert "200" in operation["responses"], path
    assert "503" in spec["paths"]["/ready"]["get"]["responses"]
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_the_docs_page_describes_every_stream_and_event(client):
    description = client.get("/openapi.json").json["info"]["description"]
    for stream in ("/ws/sessions", "/ws/sessions/{id}", "/ws/agents", "/ws/agents/{id}"):
        assert f"`{stream}`" in description
    assert "`/ws/system`" in description and "last_event_id" in description
    event_types = [
        value
        for name, value in vars(events).items()
        if name.isupper() and isinstance(value, str) and "." in value
    ]
    assert len(event_types) >= 11
    for event_type in event_types:
        assert f"`{event_type}`" in description, event_type
