"""simple-websocket's client, reading the frames that come with the server's handshake answer.

simple-websocket's `Client` reads the 101 answer with one `recv`; frames the server sent
right after it that arrive in the same read (a stream refused after the upgrade closes at
once with 4400, 4403 or 4404; `/ws/system` sends its first message at once) are kept by
wsproto, but simple-websocket looks at them only when a later `recv` brings more data. For
a close nothing more comes: the server ends the connection, the reader sees the end and
reports 1005 (no status), the code unread in its buffer. On a busy machine the client is
often slower than the server's two writes, and they arrive together (issue 19).
"""

from __future__ import annotations

from simple_websocket import Client as _SimpleClient


class Client(_SimpleClient):
    """`simple_websocket.Client`, handling what came with the handshake's answer first."""

    def _thread(self):
        try:
            self.connected = self._handle_events()
        except OSError:  # answering a ping that came with it: the server is gone
            self.connected = False
        if not self.connected:
            self.event.set()  # a receive() waiting in another thread raises ConnectionClosed
        super()._thread()
