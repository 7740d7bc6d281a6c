// The wire vocabulary this client knows (docs/protocol.md §4): WebSocket close codes as data, what each
// means to us derived from its name, and the error codes that end a stream. The server's side of
// the close codes is streaming/codes.py; tests/test_wire_codes.py keeps the two tables equal.

/** WebSocket close codes by name. */
const CLOSE_CODES = Object.freeze({ 1009: "payload_too_large", 1012: "shutting_down", 1013: "slow_consumer", 4400: "bad_frames", 4401: "unauthorized", 4403: "forbidden", 4408: "hello_timeout", 4429: "flood" });

/**
 * Closes that ask us to come back at once (not after the backoff), by name, and whether to
 * renegotiate first. shutting_down (the server is restarting) and slow_consumer (we fell behind)
 * are the server asking us to reconnect now and resume; unauthorized means our token is no good,
 * so we renegotiate (every attempt negotiates) and come back now too. "watchdog" is no wire code:
 * our own watchdog found the connection dead.
 */
const RECONNECT_AT_ONCE = Object.freeze({
  shutting_down: { renegotiate: false },
  slow_consumer: { renegotiate: false },
  unauthorized: { renegotiate: true },
  watchdog: { renegotiate: false },
});

/**
 * What a close means for us: `{reconnect: "now" | "backoff", renegotiate}`. `code` is a WebSocket
 * close code (a number), "watchdog", or another reason a transport gave (e.g. "sse_error", an
 * HTTP status): anything not named above backs off.
 */
function closeAction(code) {
  const name = code === "watchdog" ? code : typeof code === "number" ? CLOSE_CODES[code] : null;
  const atOnce = name ? RECONNECT_AT_ONCE[name] : null;
  if (atOnce) return { reconnect: "now", renegotiate: atOnce.renegotiate };
  return { reconnect: "backoff", renegotiate: false };
}

/**
 * Refusals of a send that keep the message queued and send it again (PROTOCOL §9): the server
 * is limiting us (`rate_limited`: after `retry_after_ms`), a reply of this conversation is still
 * running (`conversation_busy`: when it ends, or after `busyRetryMs`), or its shared buffer is
 * down for now (`buffer_unavailable`: after `rateLimitedRetryMs`).
 */
const SEND_AGAIN = Object.freeze(["rate_limited", "conversation_busy", "buffer_unavailable"]);

/** Seq-less error codes about a stream that mean it can never be followed again. */
const ENDS_STREAM = Object.freeze(["stream_expired", "forbidden", "not_found"]);
