"""The HTTP/WebSocket edge: thin adapters from the wire to the streaming core."""
