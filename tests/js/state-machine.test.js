"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { nextState, STATES, STATE_TABLE, orderTransports, activeFailures } = require("../../static/chat-client.js");
const { makeClient } = require("./fakes.js");

const states = (events) => events.filter((e) => e.name === "state").map((e) => `${e.oldState}>${e.newState}`);
const FAILED_KEY = "brandchat:v1:failed:http://chat.test";

test("the state table covers every state and only names known states", () => {
  assert.deepEqual(Object.keys(STATE_TABLE).sort(), [...STATES].sort());
  for (const row of Object.values(STATE_TABLE)) for (const to of Object.values(row)) assert.ok(STATES.includes(to), to);
});

test("the happy path and a drop: idle → connecting → connected → reconnecting → connected", () => {
  let s = "idle";
  const path = [];
  for (const event of ["connect", "opened", "lost", "failed", "failed", "opened"]) path.push((s = nextState(s, event)));
  assert.deepEqual(path, ["connecting", "connected", "reconnecting", "reconnecting", "reconnecting", "connected"]);
});

test("offline is reachable from every live state, left only by online, and close always wins", () => {
  for (const s of ["idle", "connecting", "connected", "reconnecting"]) assert.equal(nextState(s, "offline"), "offline");
  assert.equal(nextState("offline", "opened"), "offline");
  assert.equal(nextState("offline", "online"), "reconnecting");
  for (const s of STATES.filter((x) => x !== "closed")) assert.equal(nextState(s, "close"), "closed");
  assert.equal(nextState("closed", "connect"), "connecting");
  assert.equal(nextState("closed", "lost"), "closed");
});

test("transport order: the server's, minus unsupported ones, recent local failures last until they expire", () => {
  const offered = [{ transport: "websocket" }, { transport: "sse" }];
  const all = ["websocket", "sse"];
  assert.deepEqual(orderTransports(offered, all, () => true, {}, 0), ["websocket", "sse"]);
  assert.deepEqual(orderTransports(offered, all, () => true, { websocket: 100 }, 50), ["sse", "websocket"]);
  assert.deepEqual(orderTransports(offered, all, () => true, { websocket: 100 }, 100), ["websocket", "sse"]);
  assert.deepEqual(orderTransports(offered, all, (n) => n === "sse", {}, 0), ["sse"]);
  assert.deepEqual(orderTransports(offered, ["sse"], () => true, {}, 0), ["sse"]);
  assert.deepEqual(activeFailures({ websocket: 100, sse: 10 }, 50), ["websocket"]);
});

test("a silent WebSocket downgrades to SSE at once, is remembered, and reported as failed next time", async () => {
  const { client, events, server, localStore } = makeClient({ plan: { websocket: ["silent"] } });
  await client.connect();
  assert.equal(client.transportName, "sse");
  assert.deepEqual(states(events), ["idle>connecting", "connecting>connected"]);
  assert.ok(JSON.parse(localStore.get(FAILED_KEY)).websocket > 0);
  assert.equal(server.negotiations[0].failed, undefined);
  // The next page (a new client on the same storage) reports it and goes straight to SSE.
  const again = makeClient();
  again.localStore.set(FAILED_KEY, localStore.get(FAILED_KEY));
  again.clock.now = 1_000_000;
  await again.client.connect();
  assert.deepEqual(again.server.negotiations[0].failed, ["websocket"]);
  assert.equal(again.client.transportName, "sse");
  assert.equal(again.opened.length, 1);
});

test("the remembered failure expires and the WebSocket is tried again, then forgotten when it works", async () => {
  const { client, clock, localStore, opened, server } = makeClient();
  localStore.set(FAILED_KEY, JSON.stringify({ websocket: clock.now + 1000 }));
  await client.connect();
  assert.equal(client.transportName, "sse");
  clock.now += 2000;
  opened[0].ctx.onClose({ code: "sse_error" });
  await clock.advance(500);
  assert.equal(client.transportName, "websocket");
  assert.equal(server.negotiations[1].failed, undefined);
  assert.deepEqual(JSON.parse(localStore.get(FAILED_KEY)), {});
});

test("when every transport fails, nothing is remembered (the network is down, not the WebSocket)", async () => {
  const { client, clock, localStore, events } = makeClient({
    plan: { websocket: ["timeout", "ok"], sse: ["timeout"] },
  });
  const connected = client.connect();
  await clock.advance(0);
  assert.equal(client.state, "reconnecting");
  assert.equal(localStore.get(FAILED_KEY), undefined);
  await clock.advance(1000);
  await connected;
  assert.equal(client.transportName, "websocket");
  assert.deepEqual(states(events), ["idle>connecting", "connecting>reconnecting", "reconnecting>connected"]);
});

test("1012 reconnects at once; an ordinary drop waits for the jittered backoff", async () => {
  const { client, clock, opened } = makeClient({ options: { backoffBaseMs: 500 } });
  await client.connect();
  opened[0].ctx.onClose({ code: 1012 });
  assert.equal(client.state, "reconnecting");
  await clock.advance(0);
  assert.equal(client.state, "connected");
  opened[1].ctx.onClose({ code: 1006 });
  await clock.advance(200);
  assert.equal(client.state, "reconnecting"); // random 0.5 × 500 ms = 250 ms
  await clock.advance(100);
  assert.equal(client.state, "connected");
});

test("4401 on the WebSocket renegotiates at once for a fresh token", async () => {
  const { client, clock, server, opened } = makeClient({ plan: { websocket: ["unauthorized", "ok", "ok"] } });
  const connected = client.connect();
  await clock.advance(0);
  await connected;
  assert.equal(server.negotiations.length, 2);
  assert.equal(opened[1].ctx.token, "tok2");
  clock.now += 60000; // "at once" is rate-limited to once per immediateRetryGapMs
  opened[1].ctx.onClose({ code: 4401 });
  await clock.advance(0);
  assert.equal(client.state, "connected");
  assert.equal(server.negotiations.length, 3);
  assert.equal(opened[2].ctx.token, "tok3");
});

test("2 × heartbeat of silence: a ping first, then the connection is dead and replaced", async () => {
  const { client, clock, opened } = makeClient();
  await client.connect(); // heartbeat_ms 1000 from the fake negotiate
  await clock.advance(1100);
  assert.deepEqual(opened[0].sent, [{ type: "ping" }]);
  assert.equal(client.state, "connected");
  await clock.advance(1000);
  assert.ok(opened[0].closed);
  assert.equal(opened.length, 2);
  assert.equal(client.transportName, "websocket");
});

test("a message typed offline is queued, then sent once with the same id when back online", async () => {
  const { client, clock, opened, events, goOffline, goOnline } = makeClient();
  await client.connect();
  goOffline();
  assert.equal(client.state, "offline");
  assert.ok(opened[0].closed);
  const cmid = client.send("Do you ship to Canada?");
  await clock.advance(30000);
  assert.equal(opened.length, 1, "no attempt while offline");
  goOnline();
  await clock.advance(0);
  assert.equal(client.state, "connected");
  const sends = opened[1].sent.filter((f) => f.type === "send");
  assert.deepEqual(sends, [{ type: "send", client_message_id: cmid, text: "Do you ship to Canada?" }]);
  opened[1].ctx.onFrame({ type: "accepted", client_message_id: cmid, stream_id: "s1" });
  assert.equal(client.outbox.length, 0);
  assert.deepEqual(states(events).slice(-3), ["connected>offline", "offline>reconnecting", "reconnecting>connected"]);
});

test("the outgoing queue is bounded", async () => {
  const { client, goOffline } = makeClient({ options: { maxQueuedMessages: 2 } });
  await client.connect();
  goOffline();
  client.send("one");
  client.send("two");
  assert.throws(() => client.send("three"), (err) => err.code === "queue_full");
  assert.throws(() => client.send("   "), RangeError);
});

test("the queued outbox survives a reload through sessionStorage", async () => {
  const first = makeClient();
  await first.client.connect();
  first.goOffline();
  const cmid = first.client.send("still there after reload?");
  const saved = JSON.parse(first.sessionStore.get("brandchat:v1:session:http://chat.test:demo"));
  assert.equal(saved.conversation_id, "c_test");
  assert.deepEqual(saved.outbox, [{ client_message_id: cmid, text: "still there after reload?" }]);
  const second = makeClient({ session: saved });
  await second.client.connect();
  assert.deepEqual(second.opened[0].sent, [{ type: "send", client_message_id: cmid, text: "still there after reload?" }]);
});

test("cancel stops the streaming reply, or withdraws a message still waiting offline", async () => {
  const { client, opened, events, goOffline } = makeClient();
  await client.connect();
  const cmid = client.send("hi");
  opened[0].ctx.onFrame({ type: "accepted", client_message_id: cmid, stream_id: "s1" });
  assert.equal(client.cancel(), true);
  assert.deepEqual(opened[0].sent.at(-1), { type: "cancel", stream_id: "s1" });
  opened[0].ctx.onFrame({ type: "done", stream_id: "s1", seq: 1, finish_reason: "cancelled", text: "" });
  goOffline();
  const queued = client.send("never mind");
  const withdrawn = [];
  client.on("withdrawn", (e) => withdrawn.push(e.client_message_id));
  assert.equal(client.cancel(), true);
  assert.deepEqual(withdrawn, [queued]);
  assert.equal(client.outbox.length, 0);
  assert.equal(events.filter((e) => e.name === "done").length, 1);
});

test("an unknown brand is fatal: an error event, state closed, connect() rejects", async () => {
  const { client, server, events } = makeClient();
  const original = server.fetch;
  server.fetch = async (url, init) =>
    new URL(url).pathname === "/v1/negotiate"
      ? { status: 404, ok: false, json: async () => ({ error: { code: "not_found", message: "unknown brand 'x'" } }) }
      : original(url, init);
  client.env.fetch = server.fetch;
  await assert.rejects(client.connect());
  assert.equal(client.state, "closed");
  assert.equal(events.find((e) => e.name === "error").code, "not_found");
});

test("describe() and connect() at once negotiate one conversation, not two (regression)", async () => {
  const { client, server } = makeClient();
  let release;
  const gate = new Promise((resolve) => (release = resolve));
  const original = server.fetch;
  client.env.fetch = async (url, init) => {
    await gate;
    return original(url, init);
  };
  const described = client.describe();
  const connected = client.connect();
  release();
  await Promise.all([described, connected]);
  assert.equal(server.negotiations.length, 1);
  assert.equal(client.transport.ctx.token, client.session.token);
});

test("the token is renegotiated before it expires, and the open transport reads the fresh one", async () => {
  const { client, clock, server, opened } = makeClient();
  server.expiresInS = 60;
  await client.connect();
  opened[0].watchable = () => false; // an idle SSE transport: no watchdog in this test
  assert.equal(server.negotiations.length, 1);
  await clock.advance(47_000);
  assert.equal(server.negotiations.length, 1);
  await clock.advance(1_000); // 80 % of 60 s
  assert.equal(server.negotiations.length, 2);
  assert.equal(server.negotiations[1].conversation_id, "c_test");
  assert.equal(server.negotiations[1].token, "tok1");
  assert.equal(client.session.token, "tok2");
  assert.equal(opened.length, 1, "a refresh does not touch the open transport");
  assert.equal(opened[0].ctx.token, "tok2"); // SSE requests after the refresh use it
});
