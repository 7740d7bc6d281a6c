// GENERATED from static/src/ by static/build.py, do not edit: rebuild with `make client`.
// The ES module build of chat-client.js: the same code, exported by name; sets no global.
const BrandChat = (function () {
  "use strict";
// ---- static/src/codes.js ----
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

// ---- static/src/core.js ----
// The pure core: the rules of a connection, touching no socket, timer or storage (tested with
// `node --test tests/js/`). Every knob and its default; the state table; full-jitter backoff; the
// liveness watchdog; a reply rebuilt from numbered events (dedupe by seq); transport order and the
// downgrade rules. What a close code means is in codes.js.

/** Every knob, with its default. Pass any of them to `new ChatClient({...})`. */
const DEFAULTS = Object.freeze({
  server: "", // base URL of the chat server; "" means this page's origin
  brand: "demo",
  connectTimeoutMs: 6000, // one attempt: negotiate, then the transport open (+ the WebSocket welcome)
  requestTimeoutMs: 10000, // any other HTTP request
  heartbeatMs: 15000, // until negotiate tells us the server's heartbeat_ms
  backoffBaseMs: 500, // full-jitter exponential backoff: random(0, min(max, base * 2^attempt))
  backoffMaxMs: 20000,
  backoffResetAfterMs: 10000, // a connection must stay up this long before the backoff starts over
  immediateRetryGapMs: 5000, // "reconnect at once" (1012, 1013, dead watchdog) at most this often
  probeTimeoutMs: 5000, // tab visible again: the WebSocket must answer a ping this fast
  failedTransportTtlMs: 15 * 60 * 1000, // how long a transport that failed here is reported as failed
  maxQueuedMessages: 20, // outgoing messages waiting for the server's accept; more is refused
  busyRetryMs: 2000, // conversation_busy: send again after this long if the running reply has not ended
  rateLimitedRetryMs: 5000, // rate_limited without retry_after_ms (a proxy's bare 429), buffer_unavailable
  maxMessageChars: 4000, // the server's MAX_MESSAGE_CHARS
  maxReplies: 200, // finished replies kept for dedupe
  transports: ["websocket", "sse"], // the transports this client may use; the server's order wins
  storagePrefix: "brandchat:v1",
  locale: null, // a BCP 47 tag ("es", "pt-BR") sent to negotiate as a hint; null: none
});

const STATES = Object.freeze(["idle", "connecting", "connected", "reconnecting", "offline", "closed"]);

/**
 * The connection state machine: state → event → next state. An event a state does not list
 * leaves it unchanged (e.g. `failed` while reconnecting: still reconnecting, backing off).
 */
const STATE_TABLE = Object.freeze({
  idle: { connect: "connecting", offline: "offline", close: "closed" },
  connecting: { opened: "connected", failed: "reconnecting", offline: "offline", close: "closed" },
  connected: { lost: "reconnecting", offline: "offline", close: "closed" },
  reconnecting: { opened: "connected", offline: "offline", close: "closed" },
  offline: { online: "reconnecting", close: "closed" },
  closed: { connect: "connecting" },
});

function nextState(state, event) {
  const row = STATE_TABLE[state];
  if (!row) throw new Error("unknown state " + state);
  return row[event] || state;
}

/** Full jitter (AWS architecture blog): a uniform pick in [0, min(max, base * 2^attempt)). */
function backoffDelay(attempt, baseMs, maxMs, random) {
  const cap = Math.min(maxMs, baseMs * Math.pow(2, Math.min(attempt, 30)));
  return Math.floor((random || Math.random)() * cap);
}

/**
 * Attempts since the last good connection. `next()` recomputes the jittered delay every time;
 * the count resets only when a connection that stayed up `resetAfterMs` goes down, so a server
 * that accepts and drops at once keeps backing off instead of being hammered.
 */
class Backoff {
  constructor(opts) {
    const o = opts || {};
    this.baseMs = o.baseMs != null ? o.baseMs : DEFAULTS.backoffBaseMs;
    this.maxMs = o.maxMs != null ? o.maxMs : DEFAULTS.backoffMaxMs;
    this.resetAfterMs = o.resetAfterMs != null ? o.resetAfterMs : DEFAULTS.backoffResetAfterMs;
    this.random = o.random || Math.random;
    this.attempt = 0;
    this.upSince = null;
  }
  next() {
    const delay = backoffDelay(this.attempt, this.baseMs, this.maxMs, this.random);
    this.attempt += 1;
    return delay;
  }
  connected(now) {
    this.upSince = now;
  }
  disconnected(now) {
    if (this.upSince != null && now - this.upSince >= this.resetAfterMs) this.attempt = 0;
    this.upSince = null;
  }
}

/**
 * Liveness: `check(now)` says "ping" once after heartbeat_ms of silence (to provoke a pong) and
 * "dead" after 2 × heartbeat_ms, or when a probe (tab visible again) went unanswered.
 */
class Watchdog {
  constructor(heartbeatMs) {
    this.reset(0, heartbeatMs || DEFAULTS.heartbeatMs);
  }
  reset(now, heartbeatMs) {
    if (heartbeatMs) this.heartbeatMs = heartbeatMs;
    this.lastHeard = now;
    this.pinged = false;
    this.probeDeadline = null;
  }
  touch(now) {
    this.lastHeard = now;
    this.pinged = false;
    this.probeDeadline = null;
  }
  probe(now, timeoutMs) {
    this.probeDeadline = now + timeoutMs;
  }
  check(now) {
    const silent = now - this.lastHeard;
    if (silent >= 2 * this.heartbeatMs) return "dead";
    if (this.probeDeadline != null && now >= this.probeDeadline) return "dead";
    if (silent >= this.heartbeatMs && !this.pinged) {
      this.pinged = true;
      return "ping";
    }
    return "ok";
  }
}

/**
 * One assistant reply, rebuilt from its numbered events. `apply(event)` answers
 *   "applied"   — the next seq: the text is updated;
 *   "duplicate" — already seen (a resume overlap, a resent message): ignore it;
 *   "gap"       — a later seq than the next one: ask for a resume after `lastSeq`;
 *   "finished"  — the reply already ended: ignore it.
 */
class ReplyState {
  constructor(streamId, clientMessageId) {
    this.stream_id = streamId;
    this.client_message_id = clientMessageId || null;
    this.lastSeq = 0;
    this.text = "";
    this.status = "streaming"; // streaming | done | error
    this.finish_reason = null;
    this.error = null;
    this.shown = null; // text redrawn from history, kept on screen while a replay catches up
    this.resyncing = false; // a resume after a gap is under way
  }
  apply(event) {
    if (this.status !== "streaming") return "finished";
    if (typeof event.seq !== "number" || event.seq <= this.lastSeq) return "duplicate";
    if (event.seq > this.lastSeq + 1) return "gap";
    this.lastSeq = event.seq;
    switch (event.type) {
      case "start":
        if (event.client_message_id) this.client_message_id = event.client_message_id;
        break;
      case "delta":
        this.text += event.text;
        break;
      case "retract":
        this.text = event.text;
        break;
      case "done":
        // `done.text` is the whole reply; the server guarantees it equals the folded deltas.
        this.text = event.text;
        this.status = "done";
        this.finish_reason = event.finish_reason;
        break;
      case "error":
        this.status = "error";
        this.error = { code: event.code, message: event.message, retryable: !!event.retryable };
        break;
      default:
        break;
    }
    return "applied";
  }
}

/** Reasons a transport failed to open that mean "this transport is blocked here": try the next one. */
const DOWNGRADE_REASONS = Object.freeze(["timeout", "silent", "closed_before_welcome", "error"]);

/**
 * The order to try transports in: the server's order, minus what this client cannot or may not
 * use, with the ones that failed here recently (and have not expired) moved last.
 */
function orderTransports(offered, allowed, supported, failures, now) {
  const names = offered.map((t) => (typeof t === "string" ? t : t.transport));
  const usable = names.filter((n) => allowed.indexOf(n) >= 0 && supported(n));
  const failedRecently = (n) => failures && failures[n] != null && failures[n] > now;
  return usable.filter((n) => !failedRecently(n)).concat(usable.filter(failedRecently));
}

/** Transports whose remembered failure has not expired, for negotiate's `failed`. */
function activeFailures(failures, now) {
  return Object.keys(failures || {})
    .filter((n) => failures[n] > now)
    .sort();
}

function transportError(reason, extra) {
  const err = new Error("transport failed: " + reason);
  err.reason = reason;
  err.downgrade = DOWNGRADE_REASONS.indexOf(reason) >= 0;
  err.immediate = reason === "unauthorized";
  Object.assign(err, extra || {});
  return err;
}

/** A BCP 47 tag the server accepts ("en", "pt-BR"; as api/identity.py's LOCALE), or null. */
function cleanLocale(tag) {
  const text = String(tag == null ? "" : tag).trim().replace(/_/g, "-");
  return /^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$/.test(text) && text.length <= 35 ? text : null;
}

/**
 * negotiate's `user` from what the page passes to `identify`: `{user_id, user_hash, name?, email?}`
 * (the brand's backend computed `user_hash`). Throws TypeError without a user_id.
 */
function identityOf(identity) {
  const src = identity || {};
  const id = src.user_id != null ? src.user_id : src.id;
  if (id == null || String(id) === "") throw new TypeError("identify needs {user_id, user_hash}");
  const user = { id: String(id) };
  const hash = src.user_hash != null ? src.user_hash : src.hash;
  if (hash != null) user.hash = String(hash);
  if (src.name != null && String(src.name).trim()) user.name = String(src.name).trim().slice(0, 100);
  if (src.email != null && String(src.email).trim()) user.email = String(src.email).trim();
  return user;
}

function attemptError(message, props) {
  const err = new Error(message);
  Object.assign(err, props || {});
  return err;
}

// ---- static/src/env.js ----
// The browser around the client, each piece replaceable through `options.env` (tests): the globals
// it uses, storage that never throws, ids, WebSocket URLs, and reading an HTTP error body.

function uuid(env) {
  const c = (env && env.crypto) || (typeof crypto !== "undefined" ? crypto : null);
  // randomUUID exists only in secure contexts; a brand page on plain http still needs ids.
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const b = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
}

/** `http(s)://host/prefix` + `/v1/ws` → `ws(s)://host/prefix/v1/ws`. */
function wsUrl(server, path) {
  const url = new URL(server.replace(/\/+$/, "") + path);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

function memoryStorage() {
  const data = new Map();
  return {
    getItem: (k) => (data.has(k) ? data.get(k) : null),
    setItem: (k, v) => data.set(k, String(v)),
    removeItem: (k) => data.delete(k),
  };
}

/** Storage that never throws (private modes, disabled cookies, quota): falls back to memory. */
function safeStorage(get) {
  let store = null;
  try {
    store = get();
    const probe = "__brandchat_probe__";
    store.setItem(probe, "1");
    store.removeItem(probe);
  } catch (_) {
    store = null;
  }
  const backing = store || memoryStorage();
  return {
    get(key) {
      try {
        const raw = backing.getItem(key);
        return raw == null ? null : JSON.parse(raw);
      } catch (_) {
        return null;
      }
    },
    set(key, value) {
      try {
        backing.setItem(key, JSON.stringify(value));
      } catch (_) {
        /* quota or disabled storage: the client still works, it just forgets on reload */
      }
    },
    remove(key) {
      try {
        backing.removeItem(key);
      } catch (_) {
        /* as above */
      }
    },
  };
}

function defaultEnv() {
  const g = typeof globalThis !== "undefined" ? globalThis : {};
  return {
    WebSocket: g.WebSocket,
    EventSource: g.EventSource,
    fetch: g.fetch ? g.fetch.bind(g) : undefined,
    window: typeof window !== "undefined" ? window : null,
    document: typeof document !== "undefined" ? document : null,
    navigator: typeof navigator !== "undefined" ? navigator : null,
    crypto: g.crypto,
    setTimeout: g.setTimeout.bind(g),
    clearTimeout: g.clearTimeout.bind(g),
    setInterval: g.setInterval.bind(g),
    clearInterval: g.clearInterval.bind(g),
    now: () => Date.now(),
    random: Math.random,
    location: typeof location !== "undefined" ? location : null,
  };
}

async function readError(res) {
  // How long to wait (429): the body's retry_after_ms, else the Retry-After header (seconds).
  const header = res.headers && typeof res.headers.get === "function" ? Number(res.headers.get("retry-after")) : NaN;
  const retryAfterMs = header > 0 ? header * 1000 : undefined;
  try {
    const body = await res.json();
    if (body && body.error) {
      return {
        code: body.error.code || "http_" + res.status,
        message: body.error.message,
        retry_after_ms: Number(body.error.retry_after_ms) || retryAfterMs,
      };
    }
  } catch (_) {
    /* not JSON */
  }
  return { code: "http_" + res.status, message: "HTTP " + res.status, retry_after_ms: retryAfterMs };
}

// ---- static/src/transport-ws.js ----
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

// ---- static/src/transport-sse.js ----
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

// ---- static/src/client-session.js ----
/**
 * ChatClient, continued: the conversation with the server. The saved session and the memory of
 * failed transports in storage; HTTP; negotiate (single flight) and the token refresh; the history
 * after a reload. These are ChatClient's own methods (`this` is the client): client.js copies them
 * onto it.
 */
class ClientSession {
  // --- storage ---------------------------------------------------------------------------------

  _restore() {
    const saved = this.session_store.get(this.sessionKey);
    if (saved && saved.conversation_id && saved.token) {
      this.session = { conversation_id: saved.conversation_id, token: saved.token, started: !!saved.started };
      this._started = !!saved.started;
      this._restored = true;
      // Whose conversation this is (the server's word at the last negotiate): an identify as
      // someone else after a reload starts a new one before anything is sent.
      if (saved.user && saved.user.id != null) this.user = { id: String(saved.user.id), name: saved.user.name || null };
    }
    if (saved && Array.isArray(saved.outbox)) {
      this.outbox = saved.outbox
        .filter((m) => m && m.client_message_id && typeof m.text === "string")
        .slice(0, this.options.maxQueuedMessages)
        .map((m) => ({ client_message_id: m.client_message_id, text: m.text, sentOn: null }));
    }
  }

  _persist() {
    const outbox = this.outbox.map((m) => ({ client_message_id: m.client_message_id, text: m.text }));
    if (!this.session && !outbox.length) return;
    this.session_store.set(this.sessionKey, {
      conversation_id: this.session ? this.session.conversation_id : null,
      token: this.session ? this.session.token : null,
      started: !!this._started,
      outbox,
      user: this.user ? { id: this.user.id } : null,
    });
  }

  _failures() {
    return this.local_store.get(this.failuresKey) || {};
  }

  _rememberFailure(name) {
    const failures = this._failures();
    failures[name] = this._now() + this.options.failedTransportTtlMs;
    this.local_store.set(this.failuresKey, failures);
    this._emit("downgrade", { failed: name, until: failures[name] });
  }

  _forgetFailure(name) {
    const failures = this._failures();
    if (failures[name] == null) return;
    delete failures[name];
    this.local_store.set(this.failuresKey, failures);
  }

  // --- HTTP ------------------------------------------------------------------------------------

  async _http(method, path, body, opts) {
    const o = opts || {};
    const headers = {};
    if (body != null) headers["Content-Type"] = "application/json";
    if (o.auth && this.session) headers.Authorization = "Bearer " + this.session.token;
    const controller = typeof AbortController === "function" ? new AbortController() : null;
    const timer = this.env.setTimeout(
      () => controller && controller.abort(),
      o.timeoutMs || this.options.requestTimeoutMs
    );
    try {
      // Paths from the server are absolute ("/v1/…"); joining keeps a server mounted under a prefix.
      return await this.env.fetch(this.server + path, {
        method,
        headers,
        body: body != null ? JSON.stringify(body) : undefined,
        signal: controller ? controller.signal : undefined,
        cache: "no-store",
      });
    } finally {
      this.env.clearTimeout(timer);
    }
  }

  /**
   * Single flight: `describe()` (the launcher wants the brand) and `connect()` (the panel opened)
   * often ask at once; two negotiations without a conversation id would create two conversations
   * and leave the token and the saved session pointing at different ones.
   */
  _negotiate() {
    if (!this._negotiating) {
      this._negotiating = this._negotiateOnce().finally(() => {
        this._negotiating = null;
      });
    }
    return this._negotiating;
  }

  async _negotiateOnce() {
    const failed = activeFailures(this._failures(), this._now());
    const body = { brand: this.brandId };
    if (this.session) {
      body.conversation_id = this.session.conversation_id;
      body.token = this.session.token;
    }
    if (failed.length) body.failed = failed;
    // Additive fields (docs/client.md, "Signed-in users"): only when the page set them.
    if (this.identity) body.user = this.identity;
    if (this.locale) body.locale = this.locale;
    let res;
    try {
      res = await this._http("POST", "/v1/negotiate", body, { timeoutMs: this.options.connectTimeoutMs });
    } catch (err) {
      throw attemptError("negotiate failed: " + (err && err.message), { network: true });
    }
    if (res.status === 403 && this.session) {
      // The saved conversation cannot be continued (token expired, another server secret):
      // start a new one at once rather than failing forever.
      this._dropSession();
      throw attemptError("saved conversation rejected", { immediate: true });
    }
    if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
      const err = await readError(res);
      const fatal = attemptError(err.message, { fatal: true, code: err.code, status: res.status });
      if (err.code === "identity_invalid") {
        // Never proceed anonymously behind the page's back: say so now, whichever caller asked
        // (describe, connect, identify), once; the brand sees it in the console and the widget.
        fatal.reported = true;
        this._emit("error", { code: err.code, message: err.message, retryable: false, fatal: true });
      }
      throw fatal;
    }
    if (res.status === 429) {
      const err = await readError(res);
      throw attemptError("negotiate answered 429: " + err.message, {
        status: 429,
        code: "rate_limited",
        retryAfterMs: err.retry_after_ms,
      });
    }
    if (!res.ok) throw attemptError("negotiate answered " + res.status, { status: res.status });
    const n = await res.json();
    const started = !!(this.session && this.session.started) || !!this._started;
    this.session = { conversation_id: n.conversation_id, token: n.token, started };
    this.negotiation = n;
    const user = n.user && n.user.id != null ? { id: n.user.id, name: n.user.name || null } : null;
    this.user = user;
    if (user && user.id !== this._identifiedAs) {
      this._identifiedAs = user.id;
      this._emit("identified", { id: user.id, name: user.name, conversation_id: n.conversation_id });
    }
    this.heartbeatMs = n.heartbeat_ms || this.options.heartbeatMs;
    this._persist();
    this._scheduleTokenRefresh(n.expires_in_s);
    if (n.brand && !this.brand) {
      this.brand = n.brand;
      this._emit("brand", n.brand);
    }
    return n;
  }

  /**
   * Negotiate again at 80 % of the token's life. A long-lived WebSocket never shows its token
   * again, but the next reconnect would: with an expired token, negotiate answers 403 and the
   * conversation could not be continued.
   */
  _scheduleTokenRefresh(expiresInS) {
    if (this._refreshTimer != null) this.env.clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (!expiresInS || this.state === "closed") return;
    const delay = Math.max(10000, expiresInS * 1000 * 0.8);
    this._refreshTimer = this.env.setTimeout(() => {
      this._refreshTimer = null;
      if (this.state === "closed") return;
      this._negotiate().catch(() => this._scheduleTokenRefresh(60)); // offline: try again later
    }, delay);
  }

  // --- identity and locale (docs/client.md, "Signed-in users") ---------------------------------

  /**
   * Who is signed in on the page: `{user_id, user_hash, name?, email?}`, `user_hash` computed by the
   * brand's backend (HMAC-SHA256 of user_id). Sent with every negotiate from now on; kept in memory
   * only. Once negotiated, negotiates again at once, which binds this conversation to the user; a
   * different user than the one the conversation is bound to gets a new conversation
   * (`reset {reason: "identity"}`). Resolves to the verified user `{id, name}`; rejects (and emits
   * `error` with code `identity_invalid`, fatal) when the server refuses the hash.
   */
  identify(identity) {
    const user = identityOf(identity);
    this.identity = user;
    if (this.user && this.user.id !== user.id) this._replaceConversation("identity");
    return this._renegotiate().then(() => this.user);
  }

  /** Signed out: forget the identity and this tab's conversation (the next one is anonymous). */
  logout() {
    const hadUser = !!(this.identity || this.user);
    this.identity = null;
    if (hadUser) this._replaceConversation("logout");
  }

  /** The locale hint negotiate carries (a BCP 47 tag); an invalid tag is ignored. Returns it. */
  setLocale(locale) {
    const clean = cleanLocale(locale);
    if (!clean || clean === this.locale) return this.locale;
    this.locale = clean;
    if (this.negotiation) this._renegotiate().catch(() => undefined);
    return this.locale;
  }

  /** Negotiate again now (after one in flight, which carried the old fields) if we already have. */
  _renegotiate() {
    if (!this.negotiation && !this._negotiating && this.state === "idle") return Promise.resolve(null);
    const inFlight = this._negotiating ? this._negotiating.catch(() => undefined) : Promise.resolve();
    return inFlight.then(() => this._negotiate());
  }

  _replaceConversation(reason) {
    this.session_store.remove(this.sessionKey);
    this.session = null;
    this.user = null;
    this._identifiedAs = null;
    this._started = false;
    this._historyLoaded = true;
    this.replies.clear();
    this.outbox = [];
    const active = this.state !== "idle" && this.state !== "closed";
    if (this.transport) this._dropTransport(true);
    if (this.state === "connected") this._fire("lost");
    this._emit("reset", { reason });
    if (active) this._runLoop(0); // negotiates a new conversation
  }

  _dropSession() {
    const hadConversation = this.session && this.session.started;
    this.session_store.remove(this.sessionKey);
    this.session = null;
    this._started = this.outbox.length > 0;
    this._historyLoaded = true; // nothing left to restore
    for (const reply of this.replies.values()) {
      if (reply.status === "streaming") reply.status = "error";
    }
    if (hadConversation) this._emit("reset", { reason: "expired" });
  }

  async _loadHistory() {
    const id = this.session.conversation_id;
    let res;
    try {
      res = await this._http("GET", "/v1/conversations/" + encodeURIComponent(id), null, { auth: true });
    } catch (err) {
      throw attemptError("history failed: " + (err && err.message), { network: true });
    }
    if (!res.ok) throw attemptError("history answered " + res.status, { status: res.status });
    const history = await res.json();
    this._historyLoaded = true;
    const turns = Array.isArray(history.turns) ? history.turns : [];
    const seen = new Set();
    let lastUserId = null;
    for (const turn of turns) {
      if (turn.role === "user") {
        lastUserId = turn.client_message_id || null;
        if (lastUserId) seen.add(lastUserId);
        continue;
      }
      if (turn.role !== "assistant" || !turn.stream_id || this.replies.has(turn.stream_id)) continue;
      const reply = new ReplyState(turn.stream_id, lastUserId);
      if (turn.status === "streaming") {
        // Resume from seq 0 and rebuild: no need to know which seq the folded text stopped at.
        // `shown` keeps the redrawn text on screen until the replay has caught up with it.
        reply.shown = turn.text || "";
      } else {
        reply.status = turn.status === "error" ? "error" : "done";
        reply.text = turn.text || "";
      }
      this.replies.set(turn.stream_id, reply);
    }
    const before = this.outbox.length;
    this.outbox = this.outbox.filter((m) => !seen.has(m.client_message_id));
    if (this.outbox.length !== before) this._persist();
    this._emit("history", { conversation_id: history.conversation_id, turns });
    for (const msg of this.outbox) {
      this._emit("queued", { client_message_id: msg.client_message_id, text: msg.text, restored: true });
    }
  }
}

// ---- static/src/client-frames.js ----
/**
 * ChatClient, continued: the frames that arrive on a transport. An `accepted` takes a message out
 * of the outbox; stream events go through the reply's ReplyState (so each word is emitted once);
 * seq-less errors end a stream or refuse a message. These are ChatClient's own methods (`this` is
 * the client): client.js copies them onto it.
 */
class ClientFrames {
  // --- frames ----------------------------------------------------------------------------------

  _onFrame(frame) {
    if (!frame || typeof frame !== "object") return;
    this.watchdog.touch(this._now());
    if (frame.type === "ping" || frame.type === "pong" || frame.type === "welcome") return;
    if (frame.type === "accepted") return this._onAccepted(frame);
    if (typeof frame.seq === "number" && frame.stream_id) return this._onStreamEvent(frame);
    if (frame.type === "error") return this._onErrorFrame(frame);
    // "ended" (protocol 1.1): a resume at or after the terminal event; that reply is complete here.
  }

  _onAccepted(frame) {
    const cmid = frame.client_message_id;
    const index = this.outbox.findIndex((m) => m.client_message_id === cmid);
    if (index >= 0) {
      this.outbox.splice(index, 1);
      this._persist();
    }
    let reply = this.replies.get(frame.stream_id);
    if (!reply) {
      reply = new ReplyState(frame.stream_id, cmid);
      this._addReply(reply);
      this._emit("accepted", { client_message_id: cmid, stream_id: frame.stream_id });
    }
    if (this.cancelOnAccept.delete(cmid) && this.transport) {
      this._transmit(this.transport, { type: "cancel", stream_id: frame.stream_id });
    }
    if (this.transport && !this.transport.followsOnSend && reply.status === "streaming") {
      this._transmit(this.transport, { type: "resume", stream_id: reply.stream_id, after_seq: reply.lastSeq });
    }
  }

  _addReply(reply) {
    this.replies.set(reply.stream_id, reply);
    if (this.replies.size > this.options.maxReplies) {
      for (const [id, r] of this.replies) {
        if (this.replies.size <= this.options.maxReplies) break;
        if (r.status !== "streaming") this.replies.delete(id);
      }
    }
  }

  _onStreamEvent(event) {
    let reply = this.replies.get(event.stream_id);
    if (!reply) {
      reply = new ReplyState(event.stream_id, event.client_message_id);
      this._addReply(reply);
    }
    const verdict = reply.apply(event);
    if (verdict === "gap") {
      // A missing seq (a lost live message): ask again from the last one we hold, once.
      if (!reply.resyncing && this.transport) {
        reply.resyncing = true;
        this._transmit(this.transport, { type: "resume", stream_id: reply.stream_id, after_seq: reply.lastSeq });
      }
      return;
    }
    if (verdict !== "applied") return;
    reply.resyncing = false;
    const base = { stream_id: reply.stream_id, client_message_id: reply.client_message_id, seq: event.seq };
    switch (event.type) {
      case "start":
        this._emit("start", base);
        break;
      case "delta":
        if (reply.shown != null) {
          // Rebuilding a reply redrawn from history: stay quiet until we are past what is shown.
          if (reply.text.length <= reply.shown.length && reply.shown.startsWith(reply.text)) break;
          reply.shown = null;
        }
        this._emit("delta", Object.assign(base, { delta: event.text, text: reply.text }));
        break;
      case "retract":
        reply.shown = null;
        this._emit("retract", Object.assign(base, { reason: event.reason, text: reply.text }));
        break;
      case "done":
        this._emit("done", Object.assign(base, { finish_reason: event.finish_reason, text: reply.text }));
        this._releaseBusy();
        break;
      case "error":
        this._emit(
          "error",
          Object.assign(base, {
            code: event.code,
            message: event.message,
            retryable: !!event.retryable,
            terminal: true,
          })
        );
        this._releaseBusy();
        break;
      default:
        break;
    }
  }

  _onErrorFrame(frame) {
    if (frame.code === "shutting_down") return; // a 1012 close follows; the message stays queued
    if (frame.stream_id && ENDS_STREAM.indexOf(frame.code) >= 0) {
      // The stream cannot be followed any more (gone from the buffer, or not ours): end it here,
      // or every reconnect would try to resume it again.
      const reply = this.replies.get(frame.stream_id);
      if (reply && reply.status === "streaming") {
        reply.status = "error";
        reply.error = { code: frame.code, message: frame.message, retryable: false };
      }
      this._emit("error", {
        stream_id: frame.stream_id,
        client_message_id: reply ? reply.client_message_id : null,
        code: frame.code,
        message: frame.message || "this reply is no longer available",
        retryable: false,
        terminal: true,
      });
      return;
    }
    if (frame.client_message_id && SEND_AGAIN.indexOf(frame.code) >= 0) {
      const msg = this.outbox.find((m) => m.client_message_id === frame.client_message_id);
      if (msg) {
        const waitMs =
          frame.code === "conversation_busy"
            ? this.options.busyRetryMs
            : Math.max(0, Number(frame.retry_after_ms) || this.options.rateLimitedRetryMs);
        this._holdMessage(msg, frame.code, waitMs);
        this._emit("delayed", {
          client_message_id: msg.client_message_id,
          code: frame.code,
          message: frame.message || "",
          retry_in_ms: waitMs,
        });
      }
      return;
    }
    if (frame.retryable) {
      // Refused or interrupted for now (e.g. buffer_unavailable: the server's store is down):
      // keep the message queued, or keep following the reply, and try again after a pause.
      this._retryLater(frame);
    } else if (frame.client_message_id) {
      // The server refused this message for good (SSE 4xx): do not retry it.
      this.outbox = this.outbox.filter((m) => m.client_message_id !== frame.client_message_id);
      this._persist();
    }
    this._emit("error", {
      stream_id: frame.stream_id || null,
      client_message_id: frame.client_message_id || null,
      code: frame.code || "error",
      message: frame.message || "",
      retryable: !!frame.retryable,
    });
  }

  _retryLater(frame) {
    const delay = Math.max(Number(frame.retry_after_ms) || 0, this.options.backoffBaseMs * 4);
    const refusedOn = this.transport;
    this.env.setTimeout(() => {
      const transport = this.transport;
      // A reconnect in the meantime resent the queue and resumed every reply already.
      if (!transport || transport !== refusedOn || this.state !== "connected") return;
      if (frame.client_message_id) {
        const msg = this.outbox.find((m) => m.client_message_id === frame.client_message_id);
        if (!msg) return; // accepted meanwhile
        msg.sentOn = null;
        this._flush();
      } else if (frame.stream_id) {
        const reply = this.replies.get(frame.stream_id);
        if (reply && reply.status === "streaming") {
          this._transmit(transport, { type: "resume", stream_id: reply.stream_id, after_seq: reply.lastSeq });
        }
      }
    }, delay);
  }

  _latestStreaming() {
    let latest = null;
    for (const reply of this.replies.values()) if (reply.status === "streaming") latest = reply;
    return latest;
  }
}

// ---- static/src/client.js ----
/**
 * The client: the public API, events and the state machine, the one reconnect loop, adopting a
 * transport, liveness, the browser's online / offline / visibility events. Its conversation with
 * the server (storage, HTTP, negotiate, history) is in client-session.js and its handling of
 * incoming frames in client-frames.js; `addMethods` at the end makes those methods its own.
 */
class ChatClient {
  /**
   * @param {object} options  any DEFAULTS key, plus
   *   storage: {session, local} Storage-like objects (default: sessionStorage, localStorage),
   *   env: overrides of the globals used (WebSocket, EventSource, fetch, timers, now, …; tests),
   *   transportFactories: {name: class} to add or replace transports (tests).
   */
  constructor(options) {
    const opts = options || {};
    this.options = Object.assign({}, DEFAULTS, opts);
    this.env = Object.assign(defaultEnv(), opts.env || {});
    const origin = this.env.location ? this.env.location.origin : "http://localhost";
    this.server = new URL(this.options.server || origin, origin).toString().replace(/\/+$/, "");
    this.brandId = this.options.brand;
    const storage = opts.storage || {};
    const sessionStore = storage.session || (storage.getItem ? storage : null);
    const localStore = storage.local || (storage.getItem ? storage : null);
    this.session_store = safeStorage(() => sessionStore || this.env.window.sessionStorage);
    this.local_store = safeStorage(() => localStore || this.env.window.localStorage);
    this.sessionKey = this.options.storagePrefix + ":session:" + this.server + ":" + this.brandId;
    this.failuresKey = this.options.storagePrefix + ":failed:" + this.server;
    this.factories = Object.assign({ websocket: WebSocketTransport, sse: SseTransport }, opts.transportFactories);

    this.state = "idle";
    this.transport = null;
    this.session = null; // {conversation_id, token, started}
    this.brand = null; // negotiate's `brand`
    this.identity = opts.identity ? identityOf(opts.identity) : null; // negotiate's `user` (with the hash)
    this.user = null; // the verified user negotiate answered: {id, name}
    this._identifiedAs = null; // the user id of the last `identified` event
    this.locale = cleanLocale(this.options.locale);
    this.heartbeatMs = this.options.heartbeatMs;
    this.outbox = []; // [{client_message_id, text, sentOn}] until the server accepts each
    this.replies = new Map(); // stream_id → ReplyState, in arrival order
    this.cancelOnAccept = new Set();
    this.pendingCancels = new Set();
    this.backoff = new Backoff({
      baseMs: this.options.backoffBaseMs,
      maxMs: this.options.backoffMaxMs,
      resetAfterMs: this.options.backoffResetAfterMs,
      random: this.env.random,
    });
    this.watchdog = new Watchdog(this.heartbeatMs);
    this.listeners = new Map();
    this._loopRunning = false;
    this._wake = null;
    this._watchdogTimer = null;
    this._lastImmediate = -Infinity;
    this._ready = null;
    this._negotiating = null;
    this._refreshTimer = null;
    this._holdTimer = null;
    this._restored = false;
    this._historyLoaded = false;
    this._restore();
    this._listenToEnvironment();
  }

  // --- public API ------------------------------------------------------------------------------

  /** Subscribe; returns a function that unsubscribes. Events: see docs/client.md. */
  on(name, fn) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set());
    this.listeners.get(name).add(fn);
    return () => this.off(name, fn);
  }
  off(name, fn) {
    const set = this.listeners.get(name);
    if (set) set.delete(fn);
  }

  get conversationId() {
    return this.session ? this.session.conversation_id : null;
  }
  get transportName() {
    return this.transport ? this.transport.name : null;
  }
  /** True when a previous page in this tab already talked (so the widget reconnects at load). */
  get hasConversation() {
    return !!(this.session && this.session.started) || this.outbox.length > 0;
  }

  /**
   * Negotiate, restore history if this tab had a conversation, open the best transport. Resolves
   * once connected (waits through offline spells and backoff); rejects only on a fatal error
   * (unknown brand, malformed request) or `close()`.
   */
  connect() {
    if (this.state === "connected") return Promise.resolve();
    if (!this._ready) {
      let resolve, reject;
      const promise = new Promise((a, b) => {
        resolve = a;
        reject = b;
      });
      promise.catch(() => undefined); // an unobserved rejection is not an error here
      this._ready = { promise, resolve, reject };
    }
    const ready = this._ready.promise;
    if (this.state === "idle" || this.state === "closed") this._fire("connect");
    this._runLoop(0);
    return ready;
  }

  /** Negotiate only (brand name and colours for a launcher), without opening a transport. */
  async describe() {
    if (!this.brand) await this._negotiate();
    return this.brand;
  }

  /**
   * Queue a message and send it as soon as a transport is up; returns its client_message_id.
   * The same id is reused on every retry, so the server starts one reply however often it arrives.
   * Throws RangeError (empty / too long) or an Error with code "queue_full".
   */
  send(text) {
    text = String(text == null ? "" : text);
    if (!text.trim()) throw new RangeError("message is empty");
    if (text.length > this.options.maxMessageChars) {
      throw new RangeError("message is longer than " + this.options.maxMessageChars + " characters");
    }
    if (this.outbox.length >= this.options.maxQueuedMessages) {
      throw attemptError("too many messages are waiting to be sent", { code: "queue_full" });
    }
    const msg = { client_message_id: uuid(this.env), text, sentOn: null };
    this.outbox.push(msg);
    if (this.session) this.session.started = true;
    this._started = true;
    this._persist();
    this._emit("queued", { client_message_id: msg.client_message_id, text, state: this.state });
    if (this.state === "connected") this._flush();
    else this.connect().catch(() => undefined);
    return msg.client_message_id;
  }

  /**
   * Stop the newest reply that is streaming (or `streamId`): it ends with done/cancelled. With no
   * reply streaming, withdraws the newest message still waiting to be sent ("withdrawn" event).
   */
  cancel(streamId) {
    const reply = streamId ? this.replies.get(streamId) : this._latestStreaming();
    if (reply && reply.status === "streaming") {
      if (this.transport) this._transmit(this.transport, { type: "cancel", stream_id: reply.stream_id });
      else this.pendingCancels.add(reply.stream_id);
      return true;
    }
    const msg = this.outbox[this.outbox.length - 1];
    if (!msg) return false;
    if (msg.sentOn) {
      this.cancelOnAccept.add(msg.client_message_id); // in flight: cancel its stream on accept
    } else {
      this.outbox.pop();
      this._persist();
      this._emit("withdrawn", { client_message_id: msg.client_message_id, text: msg.text });
    }
    return true;
  }

  /** Close for good (until `connect()` again): no reconnects; window events are then ignored. */
  close() {
    this._fire("close");
    this._dropTransport(true);
    if (this._refreshTimer != null) this.env.clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (this._holdTimer != null) this.env.clearTimeout(this._holdTimer);
    this._holdTimer = null;
    if (this._wake) this._wake();
    if (this._ready) {
      this._ready.reject(attemptError("client closed", { code: "closed" }));
      this._ready = null;
    }
  }

  /** Forget this tab's conversation (a "new chat" button). */
  reset() {
    this._replaceConversation("reset");
  }

  // --- events and state ------------------------------------------------------------------------

  _emit(name, detail) {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const fn of Array.from(set)) {
      try {
        fn(detail);
      } catch (err) {
        // One broken listener must not break the stream for the others.
        if (typeof console !== "undefined") console.error("brandchat listener for " + name + " failed", err);
      }
    }
  }

  _fire(event) {
    const oldState = this.state;
    const newState = nextState(oldState, event);
    if (newState === oldState) return;
    this.state = newState;
    this._emit("state", { newState, oldState });
  }

  _now() {
    return this.env.now();
  }

  _online() {
    const nav = this.env.navigator;
    return !(nav && nav.onLine === false);
  }

  // --- connecting ------------------------------------------------------------------------------

  /** The one reconnect loop: wait (backoff / offline), attempt, repeat until connected or closed. */
  async _runLoop(initialDelay) {
    if (this._loopRunning) return;
    this._loopRunning = true;
    let delay = initialDelay;
    try {
      while (this.state !== "closed" && this.state !== "connected") {
        if (!this._online()) {
          this._fire("offline");
          await this._sleep(Infinity); // woken by the `online` event
          continue;
        }
        if (this.state === "offline") this._fire("online");
        if (delay > 0) {
          await this._sleep(delay);
          if (this.state === "closed") return;
          if (!this._online()) continue;
        }
        try {
          await this._attempt();
        } catch (err) {
          if (this.state === "closed") return;
          if (err.fatal) {
            if (!err.reported) {
              this._emit("error", { code: err.code || "fatal", message: err.message, retryable: false, fatal: true });
            }
            this.close();
            return;
          }
          this._fire("failed");
          // A limited negotiate (429) says when to come back: not sooner than that.
          delay = Math.max(this._retryDelay(!!err.immediate), err.retryAfterMs || 0);
        }
      }
    } finally {
      this._loopRunning = false;
    }
  }

  _retryDelay(immediate) {
    const now = this._now();
    if (immediate && now - this._lastImmediate >= this.options.immediateRetryGapMs) {
      this._lastImmediate = now;
      return 0;
    }
    return this.backoff.next();
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      let timer = null;
      const done = () => {
        if (timer != null) this.env.clearTimeout(timer);
        if (this._wake === done) this._wake = null;
        resolve();
      };
      this._wake = done;
      if (ms !== Infinity) timer = this.env.setTimeout(done, ms);
    });
  }

  async _attempt() {
    await this._negotiate();
    if (this._restored && !this._historyLoaded && this.session) await this._loadHistory();
    const offered = (this.negotiation && this.negotiation.transports) || [];
    const order = orderTransports(
      offered,
      this.options.transports,
      (name) => !!this.factories[name] && this.factories[name].supported(this.env),
      this._failures(),
      this._now()
    );
    if (!order.length) throw attemptError("no usable transport", { fatal: true, code: "no_transport" });
    let blocked = null;
    let lastError = null;
    for (const name of order) {
      const transport = this._makeTransport(name);
      try {
        const welcome = await transport.open();
        if (this.state === "closed") {
          transport.close();
          return;
        }
        if (!this._online()) {
          transport.close();
          throw attemptError("went offline while connecting", { offline: true });
        }
        // A failure is remembered only when the next transport then works: "WebSocket is blocked
        // here", not "the network is down".
        if (blocked) this._rememberFailure(blocked);
        else if (name === "websocket") this._forgetFailure("websocket");
        if (welcome && welcome.heartbeat_ms) this.heartbeatMs = welcome.heartbeat_ms;
        this._adopt(transport);
        return;
      } catch (err) {
        transport.close();
        if (err.offline) throw err;
        lastError = err;
        if (!err.downgrade) break;
        if (!blocked) blocked = name;
        this._emit("transport_failed", { transport: name, reason: err.reason });
      }
    }
    throw lastError || attemptError("no transport opened");
  }

  _makeTransport(name) {
    const Factory = this.factories[name];
    const offered = (this.negotiation.transports || []).find((t) => t.transport === name) || {};
    let transport = null;
    const client = this;
    const ctx = {
      env: this.env,
      server: this.server,
      get token() {
        return client.session ? client.session.token : ""; // the freshest, after a refresh
      },
      conversationId: this.session.conversation_id,
      url: name === "websocket" ? wsUrl(this.server, offered.url || "/v1/ws") : null,
      messagesUrl: offered.url || "/v1/conversations/" + encodeURIComponent(this.session.conversation_id) + "/messages",
      connectTimeoutMs: this.options.connectTimeoutMs,
      request: (method, path, body) => this._http(method, path, body, { auth: true }),
      onFrame: (frame) => transport === this.transport && this._onFrame(frame),
      onClose: (info) => this._onTransportClosed(transport, info),
      onActivity: () => transport === this.transport && this.watchdog.touch(this._now()),
    };
    transport = new Factory(ctx);
    return transport;
  }

  _adopt(transport) {
    this.transport = transport;
    const now = this._now();
    this.backoff.connected(now);
    this.watchdog.reset(now, this.heartbeatMs);
    this._startWatchdog();
    this._fire("opened");
    this._emit("transport", { name: transport.name });
    if (this._ready) {
      this._ready.resolve();
      this._ready = null;
    }
    // Resume every reply still streaming from its last seq, re-send cancels, flush the outbox.
    for (const reply of this.replies.values()) {
      if (reply.status === "streaming") {
        this._transmit(transport, { type: "resume", stream_id: reply.stream_id, after_seq: reply.lastSeq });
      }
    }
    for (const streamId of this.pendingCancels) this._transmit(transport, { type: "cancel", stream_id: streamId });
    this.pendingCancels.clear();
    this._flush();
  }

  _flush() {
    const transport = this.transport;
    if (!transport) return;
    const now = this._now();
    for (const msg of this.outbox) {
      // A held message waits, and so does everything typed after it: messages keep their order.
      if (msg.notBefore && msg.notBefore > now) break;
      if (msg.sentOn === transport) continue;
      msg.sentOn = transport;
      this._transmit(transport, { type: "send", client_message_id: msg.client_message_id, text: msg.text });
    }
  }

  /**
   * The server refused `msg` for now (SEND_AGAIN): keep it queued and send it again after `waitMs`
   * (a conversation_busy message goes earlier, as soon as the running reply ends).
   */
  _holdMessage(msg, code, waitMs) {
    msg.sentOn = null;
    msg.heldFor = code;
    msg.notBefore = this._now() + waitMs;
    if (this._holdTimer != null) this.env.clearTimeout(this._holdTimer);
    this._holdTimer = this.env.setTimeout(() => {
      this._holdTimer = null;
      if (this.state === "connected") this._flush();
    }, waitMs);
  }

  /** A reply ended: messages held because the conversation was busy go now. */
  _releaseBusy() {
    let released = false;
    for (const msg of this.outbox) {
      if (msg.heldFor === "conversation_busy") {
        msg.notBefore = 0;
        msg.heldFor = null;
        released = true;
      }
    }
    if (released && this.state === "connected") this._flush();
  }

  _transmit(transport, frame) {
    try {
      const result = transport.send(frame);
      if (result && typeof result.catch === "function") {
        result.catch(() => this._onTransportClosed(transport, { code: "send_failed" }));
      }
    } catch (_) {
      this._onTransportClosed(transport, { code: "send_failed" });
    }
  }

  _dropTransport(closeIt) {
    const transport = this.transport;
    this.transport = null;
    this._stopWatchdog();
    for (const msg of this.outbox) msg.sentOn = null;
    if (transport) {
      this.backoff.disconnected(this._now());
      if (closeIt) transport.close();
    }
  }

  _onTransportClosed(transport, info) {
    if (!transport || transport !== this.transport) return;
    this._dropTransport(true);
    if (this.state === "closed") return;
    const action = closeAction(info && info.code);
    this._fire(this._online() ? "lost" : "offline");
    this._emit("disconnect", { transport: transport.name, code: info && info.code });
    this._runLoop(this._retryDelay(action.reconnect === "now"));
  }

  // --- liveness --------------------------------------------------------------------------------

  _startWatchdog() {
    this._stopWatchdog();
    const tick = Math.max(100, Math.min(1000, Math.floor(this.heartbeatMs / 4)));
    this._watchdogTimer = this.env.setInterval(() => this._checkLiveness(), tick);
  }

  _stopWatchdog() {
    if (this._watchdogTimer != null) this.env.clearInterval(this._watchdogTimer);
    this._watchdogTimer = null;
  }

  _checkLiveness() {
    const transport = this.transport;
    if (!transport) return;
    const now = this._now();
    if (!transport.watchable()) {
      this.watchdog.touch(now);
      return;
    }
    const verdict = this.watchdog.check(now);
    if (verdict === "ping" && transport.canPing) this._transmit(transport, { type: "ping" });
    if (verdict === "dead") this._onTransportClosed(transport, { code: "watchdog" });
  }

  _listenToEnvironment() {
    const win = this.env.window;
    const doc = this.env.document;
    if (win && win.addEventListener) {
      win.addEventListener("online", () => this._onOnline());
      win.addEventListener("offline", () => this._onOffline());
    }
    if (doc && doc.addEventListener) {
      doc.addEventListener("visibilitychange", () => {
        if (doc.visibilityState === "visible") this._onVisible();
      });
    }
  }

  _onOnline() {
    if (this.state === "offline" || this.state === "reconnecting") {
      this._lastImmediate = this._now();
      if (this._wake) this._wake();
      else this._runLoop(0);
    }
  }

  _onOffline() {
    if (this.state === "idle" || this.state === "closed") return;
    // The socket may linger half-dead for a long time: close it now and queue what is typed.
    if (this.transport) this._dropTransport(true);
    this._fire("offline");
    this._runLoop(0);
  }

  _onVisible() {
    if (this.state === "reconnecting" || this.state === "offline") {
      if (this._wake) this._wake();
      return;
    }
    const transport = this.transport;
    if (transport && transport.canPing) {
      // A phone that slept may hold a dead socket that looks open: demand an answer quickly.
      this.watchdog.probe(this._now(), this.options.probeTimeoutMs);
      this._transmit(transport, { type: "ping" });
    }
  }
}

/**
 * Copies the methods of `parts` onto `Class.prototype` exactly as a class body defines them
 * (non-enumerable), so one class can be written in several files. A name defined twice throws:
 * in one class body the later one would silently win.
 */
function addMethods(Class, parts) {
  for (const part of parts) {
    for (const name of Object.getOwnPropertyNames(part.prototype)) {
      if (name === "constructor") continue;
      if (Object.prototype.hasOwnProperty.call(Class.prototype, name)) {
        throw new Error(Class.name + "." + name + " is defined twice");
      }
      Object.defineProperty(Class.prototype, name, Object.getOwnPropertyDescriptor(part.prototype, name));
    }
  }
}

addMethods(ChatClient, [ClientSession, ClientFrames]);

// ---- static/src/footer.js ----
// The public object: window.BrandChat, globalThis.BrandChat or module.exports (see header.js).
return {
  DEFAULTS,
  STATES,
  STATE_TABLE,
  DOWNGRADE_REASONS,
  CLOSE_CODES,
  ENDS_STREAM,
  SEND_AGAIN,
  nextState,
  backoffDelay,
  Backoff,
  Watchdog,
  ReplyState,
  closeAction,
  orderTransports,
  activeFailures,
  uuid,
  wsUrl,
  WebSocketTransport,
  SseTransport,
  ChatClient,
  version: "1",
};
})();

export default BrandChat;
export const {
  DEFAULTS,
  STATES,
  STATE_TABLE,
  DOWNGRADE_REASONS,
  CLOSE_CODES,
  ENDS_STREAM,
  SEND_AGAIN,
  nextState,
  backoffDelay,
  Backoff,
  Watchdog,
  ReplyState,
  closeAction,
  orderTransports,
  activeFailures,
  uuid,
  wsUrl,
  WebSocketTransport,
  SseTransport,
  ChatClient,
  version,
} = BrandChat;
