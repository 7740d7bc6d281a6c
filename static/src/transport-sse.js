// The same interface as WebSocketTransport (transport-ws.js).

/**
 * Server-Sent Events + POST (docs/protocol.md §5): `send` POSTs the message, `resume` opens an
 * EventSource on the stream's events (token and after_seq in the query: EventSource cannot set
 * headers), `cancel` POSTs the cancel. One EventSource per stream being followed; a dropped one
 * is reported as a lost transport so the client reconnects (and maybe upgrades) and resumes
 * from its own last seq instead of EventSource's blind auto-retry.
 */
class SseTransport {
  static supported(env) {
    return typeof env.EventSource === "function" && typeof env.fetch === "function";
  }
  constructor(ctx) {
    this.ctx = ctx;
    this.name = "sse";
    this.followsOnSend = false; // the client opens the events after `accepted`
    this.canPing = false;
    this.sources = new Map();
    this.closed = false;
    this.chain = Promise.resolve();
  }
  watchable() {
    // EventSource hides `: ping` comments, so only an open stream (events at least every
    // heartbeat while a reply runs) can be watched; an idle SSE transport holds no connection.
    return this.sources.size > 0;
  }
  open() {
    // Nothing to open: the negotiate that preceded this attempt went over the same HTTP path.
    return Promise.resolve({});
  }
  send(frame) {
    if (this.closed) throw new Error("sse transport is closed");
    if (frame.type === "send") return this._serial(() => this._post(frame));
    if (frame.type === "cancel") return this._serial(() => this._cancel(frame.stream_id));
    if (frame.type === "resume") return this._follow(frame.stream_id, frame.after_seq);
    return undefined; // ping: nothing to provoke over SSE
  }
  close() {
    this.closed = true;
    for (const es of this.sources.values()) es.close();
    this.sources.clear();
  }
  _serial(fn) {
    // One POST at a time, so messages reach the server in the order they were typed.
    const p = this.chain.then(fn);
    this.chain = p.catch(() => undefined);
    return p;
  }
  async _post(frame) {
    const { client_message_id, text } = frame;
    let res;
    try {
      res = await this.ctx.request("POST", this.ctx.messagesUrl, { client_message_id, text });
    } catch (_) {
      this._lost("network");
      return;
    }
    if (this.closed) return;
    if (res.status === 202) {
      const body = await res.json();
      this.ctx.onFrame({ type: "accepted", client_message_id, stream_id: body.stream_id });
      return;
    }
    if (res.status === 401) return this._lost(4401);
    if (res.status === 429 || res.status === 409) {
      // Refused for now (PROTOCOL §9): the client keeps the message and sends it again. A bare
      // 429 (a proxy's, no JSON body) is a rate limit too.
      const err = await readError(res);
      const code = res.status === 429 ? "rate_limited" : err.code;
      this.ctx.onFrame({
        type: "error",
        code,
        message: err.message,
        client_message_id,
        retryable: true,
        retry_after_ms: err.retry_after_ms,
      });
      return;
    }
    if (res.status >= 500) return this._lost(res.status);
    const err = await readError(res);
    this.ctx.onFrame({ type: "error", code: err.code, message: err.message, client_message_id, retryable: false });
  }
  async _cancel(streamId) {
    let res;
    try {
      res = await this.ctx.request("POST", "/v1/streams/" + encodeURIComponent(streamId) + "/cancel", null);
    } catch (_) {
      this._lost("network");
      return;
    }
    if (res.status === 410) {
      const err = await readError(res);
      this.ctx.onFrame({ type: "error", code: "stream_expired", message: err.message, stream_id: streamId });
    } else if (res.status === 401) {
      this._lost(4401);
    }
  }
  _follow(streamId, afterSeq) {
    const old = this.sources.get(streamId);
    if (old) old.close();
    const url = new URL(this.ctx.server + "/v1/streams/" + encodeURIComponent(streamId) + "/events");
    url.searchParams.set("token", this.ctx.token);
    url.searchParams.set("after_seq", String(afterSeq || 0));
    const es = new this.ctx.env.EventSource(url.toString());
    this.sources.set(streamId, es);
    const current = () => !this.closed && this.sources.get(streamId) === es;
    const onEvent = (ev) => {
      if (!current()) return;
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      // The response ends after a terminal event (or a seq-less stream_expired): close before
      // EventSource's own retry would reopen it.
      if (data.type === "done" || data.type === "error") this._unfollow(streamId);
      this.ctx.onFrame(data);
    };
    for (const type of ["start", "delta", "retract", "done"]) es.addEventListener(type, onEvent);
    es.addEventListener("error", (ev) => {
      // EventSource fires "error" both for the server's `event: error` (a MessageEvent with
      // data) and for a failed or dropped connection (a plain Event): tell them apart by data.
      if (typeof ev.data === "string") return onEvent(ev);
      if (!current()) return;
      this._unfollow(streamId);
      this._lost("sse_error");
    });
    es.addEventListener("open", () => current() && this.ctx.onActivity());
  }
  _unfollow(streamId) {
    const es = this.sources.get(streamId);
    if (es) es.close();
    this.sources.delete(streamId);
  }
  _lost(code) {
    if (this.closed) return;
    this.close();
    this.ctx.onClose({ code });
  }
}
