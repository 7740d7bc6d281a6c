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
