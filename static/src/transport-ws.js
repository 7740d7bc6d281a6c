// Transports share one interface (centrifuge-js): `name`, static `supported(env)`, `open()` →
// a promise of the welcome, `send(frame)` taking the WebSocket's client frames (send, resume,
// cancel, ping), `close()`; plus `followsOnSend`, `canPing` and `watchable()`. Each is built with a
// `ctx` from ChatClient._makeTransport (env, urls, the token, request, onFrame, onClose, onActivity).

/**
 * WebSocket (docs/protocol.md §4). `open()` resolves on `welcome`; it rejects with a downgrade-class
 * reason when the socket does not open in time ("timeout"), closes first ("closed_before_welcome",
 * e.g. a proxy answering the Upgrade with 403), or opens and stays silent ("silent": the proxy
 * took the Upgrade but passes no frames).
 */
class WebSocketTransport {
  static supported(env) {
    return typeof env.WebSocket === "function";
  }
  constructor(ctx) {
    this.ctx = ctx;
    this.name = "websocket";
    this.followsOnSend = true; // the server follows the stream after `send`
    this.canPing = true;
    this.ws = null;
    this.closed = false;
  }
  watchable() {
    return true;
  }
  open() {
    const { env, url, token, connectTimeoutMs } = this.ctx;
    return new Promise((resolve, reject) => {
      let settled = false;
      let opened = false;
      const fail = (reason, extra) => {
        if (settled) return;
        settled = true;
        env.clearTimeout(timer);
        this._teardown();
        reject(transportError(reason, extra));
      };
      const timer = env.setTimeout(() => fail(opened ? "silent" : "timeout"), connectTimeoutMs);
      let ws;
      try {
        ws = new env.WebSocket(url);
      } catch (_) {
        fail("error");
        return;
      }
      this.ws = ws;
      ws.onopen = () => {
        opened = true;
        try {
          ws.send(JSON.stringify({ type: "hello", token }));
        } catch (_) {
          fail("error");
        }
      };
      ws.onmessage = (message) => {
        let frame;
        try {
          frame = JSON.parse(message.data);
        } catch (_) {
          return;
        }
        if (!settled) {
          if (frame && frame.type === "welcome") {
            settled = true;
            env.clearTimeout(timer);
            resolve(frame);
          }
          return;
        }
        if (!this.closed) this.ctx.onFrame(frame);
      };
      ws.onclose = (ev) => {
        if (!settled) {
          // 4401 before the welcome: our token is no good, not a blocked WebSocket.
          const reason = CLOSE_CODES[ev.code] === "unauthorized" ? "unauthorized" : "closed_before_welcome";
          fail(reason, { code: ev.code });
          return;
        }
        if (this.closed) return;
        this.closed = true;
        this.ws = null;
        this.ctx.onClose({ code: ev.code, reason: ev.reason });
      };
      ws.onerror = () => {
        /* a close event always follows; it carries the code */
      };
    });
  }
  send(frame) {
    if (this.closed || !this.ws || this.ws.readyState !== 1) throw new Error("websocket is not open");
    this.ws.send(JSON.stringify(frame));
  }
  close() {
    this.closed = true;
    this._teardown();
  }
  _teardown() {
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(1000, "client closing");
    } catch (_) {
      /* already closing */
    }
  }
}
