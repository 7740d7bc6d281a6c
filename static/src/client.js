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
