// Fakes for driving ChatClient in Node without a browser: a manual clock, a scripted server
// (negotiate + history over a fake fetch) and scripted transports. Not a test file itself
// (node --test only runs *.test.js here).
"use strict";

const { ChatClient } = require("../../static/chat-client.js");

/** setTimeout/setInterval on a clock that moves only when the test says so. */
class FakeClock {
  constructor() {
    this.now = 1_000_000;
    this.timers = new Map();
    this.nextId = 1;
  }
  setTimeout(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.now + Math.max(0, ms || 0), fn, every: null });
    return id;
  }
  setInterval(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.now + ms, fn, every: ms });
    return id;
  }
  clearTimeout(id) {
    this.timers.delete(id);
  }
  clearInterval(id) {
    this.timers.delete(id);
  }
  /** Move time forward, firing due timers in order and letting promises settle in between. */
  async advance(ms) {
    const end = this.now + ms;
    for (;;) {
      await settle();
      let nextId = null;
      let next = null;
      for (const [id, t] of this.timers) if (t.at <= end && (!next || t.at < next.at)) [nextId, next] = [id, t];
      if (!next) break;
      this.now = Math.max(this.now, next.at);
      if (next.every) next.at += next.every;
      else this.timers.delete(nextId);
      next.fn();
    }
    this.now = end;
    await settle();
  }
}

async function settle() {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** The HTTP side of a server: negotiate (records every body) and history. */
class FakeServer {
  constructor() {
    this.negotiations = [];
    this.historyTurns = [];
    this.online = true;
    this.n = 0;
    this.expiresInS = 3600;
    this.validHashes = new Set(); // user hashes this fake "verifies"; any other is identity_invalid
    this.boundTo = new Map(); // conversation_id → user id
  }
  fetch = async (url, init) => {
    if (!this.online) throw new TypeError("Failed to fetch");
    const path = new URL(url).pathname;
    if (path === "/v1/negotiate") {
      const body = JSON.parse(init.body);
      this.negotiations.push(body);
      this.n += 1;
      const failed = body.failed || [];
      const names = ["websocket", "sse"];
      const order = names.filter((t) => !failed.includes(t)).concat(names.filter((t) => failed.includes(t)));
      const cid = body.conversation_id || "c_test" + (this.n > 1 && !body.conversation_id ? this.n : "");
      if (body.user && !this.validHashes.has(body.user.hash)) {
        return json(401, { error: { code: "identity_invalid", message: "user.hash does not match user.id for this brand" } });
      }
      const owner = this.boundTo.get(cid);
      if (body.conversation_id && owner && body.user && owner !== body.user.id) {
        return json(403, { error: { code: "forbidden", message: "it belongs to another user" } });
      }
      if (body.user) this.boundTo.set(cid, body.user.id);
      const user = body.user || (owner ? { id: owner } : null);
      return json(200, {
        ...(user ? { user: { id: user.id, ...(user.name ? { name: user.name } : {}) } } : {}),
        ...(body.locale ? { locale: body.locale } : {}),
        conversation_id: cid,
        token: "tok" + this.n,
        expires_in_s: this.expiresInS,
        transports: order.map((t) => ({ transport: t, url: t === "websocket" ? "/v1/ws" : `/v1/conversations/${cid}/messages` })),
        heartbeat_ms: 1000,
        resume_window_s: 600,
        brand: { id: "demo", name: "Demo", persona_name: "Juniper", theme: {}, provider: "offline" },
      });
    }
    if (path.startsWith("/v1/conversations/")) {
      return json(200, { conversation_id: "c_test", turns: this.historyTurns });
    }
    return json(404, { error: { code: "not_found", message: "no" } });
  };
}

function json(status, body) {
  return { status, ok: status >= 200 && status < 300, json: async () => body };
}

/**
 * Scripted transports. `plan[name]` is a list of outcomes for successive opens: "ok", or a failure
 * reason ("silent", "timeout", "closed_before_welcome", "unauthorized"). Every instance is kept in
 * `opened` so a test can push frames (`t.ctx.onFrame`) or kill it (`t.ctx.onClose`).
 */
function fakeTransports(plan) {
  const opened = [];
  const make = (name, followsOnSend) =>
    class {
      static supported() {
        return true;
      }
      constructor(ctx) {
        this.ctx = ctx;
        this.name = name;
        this.followsOnSend = followsOnSend;
        this.canPing = name === "websocket";
        this.sent = [];
        this.closed = false;
        opened.push(this);
      }
      watchable() {
        return true;
      }
      open() {
        const outcome = (plan[name] || []).length ? plan[name].shift() : "ok";
        if (outcome === "ok") return Promise.resolve({ type: "welcome", heartbeat_ms: 1000 });
        const err = new Error(outcome);
        err.reason = outcome;
        err.downgrade = ["timeout", "silent", "closed_before_welcome", "error"].includes(outcome);
        err.immediate = outcome === "unauthorized";
        return Promise.reject(err);
      }
      send(frame) {
        if (this.closed) throw new Error("closed");
        this.sent.push(frame);
      }
      close() {
        this.closed = true;
      }
    };
  return { opened, factories: { websocket: make("websocket", true), sse: make("sse", false) } };
}

/** A ChatClient wired to the fakes; records every emitted event in `events`. */
function makeClient({ plan = {}, options = {}, session = null } = {}) {
  const clock = new FakeClock();
  const server = new FakeServer();
  const { opened, factories } = fakeTransports(plan);
  const win = new EventTarget();
  const doc = new EventTarget();
  doc.visibilityState = "visible";
  const nav = { onLine: true };
  const sessionStore = new Map();
  const localStore = new Map();
  const asStorage = (m) => ({
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => m.set(k, String(v)),
    removeItem: (k) => m.delete(k),
  });
  const storage = { session: asStorage(sessionStore), local: asStorage(localStore) };
  if (session) {
    storage.session.setItem("brandchat:v1:session:http://chat.test:demo", JSON.stringify(session));
  }
  let ids = 0;
  const client = new ChatClient({
    server: "http://chat.test",
    brand: "demo",
    storage,
    transportFactories: factories,
    env: {
      fetch: server.fetch,
      window: win,
      document: doc,
      navigator: nav,
      location: null,
      crypto: { randomUUID: () => "m" + ++ids },
      setTimeout: (fn, ms) => clock.setTimeout(fn, ms),
      clearTimeout: (id) => clock.clearTimeout(id),
      setInterval: (fn, ms) => clock.setInterval(fn, ms),
      clearInterval: (id) => clock.clearInterval(id),
      now: () => clock.now,
      random: () => 0.5,
    },
    ...options,
  });
  const events = [];
  for (const name of ["state", "delta", "retract", "done", "error", "accepted", "start", "history", "queued", "transport", "downgrade"]) {
    client.on(name, (detail) => events.push({ name, ...detail }));
  }
  const goOffline = () => {
    nav.onLine = false;
    win.dispatchEvent(new Event("offline"));
  };
  const goOnline = () => {
    nav.onLine = true;
    win.dispatchEvent(new Event("online"));
  };
  return { client, clock, server, opened, events, storage, localStore, sessionStore, goOffline, goOnline, win, doc, nav };
}

/** The frames of one reply: start, the words as deltas, done. */
function replyEvents(streamId, words, { cmid = "m1", from = 1 } = {}) {
  const events = [{ type: "start", stream_id: streamId, seq: 1, conversation_id: "c_test", client_message_id: cmid }];
  words.forEach((w, i) => events.push({ type: "delta", stream_id: streamId, seq: i + 2, text: w }));
  events.push({ type: "done", stream_id: streamId, seq: words.length + 2, finish_reason: "stop", text: words.join("") });
  return events.filter((e) => e.seq >= from);
}

module.exports = { FakeClock, FakeServer, fakeTransports, makeClient, replyEvents, settle };
