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
