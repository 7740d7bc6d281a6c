"use strict";
// Seq-less errors the server marks retryable (protocol 1.1: buffer_unavailable, rate_limited) keep
// the message queued, or the reply followed, and try again after a pause; others give up on it.
const test = require("node:test");
const assert = require("node:assert/strict");
const { makeClient } = require("./fakes.js");

/** Let time pass while the server keeps the connection alive (its heartbeat is 1 s here). */
async function alive(clock, transport, ms) {
  for (let left = ms; left > 0; left -= 500) {
    await clock.advance(Math.min(500, left));
    transport.ctx.onFrame({ type: "ping" });
  }
}

test("a send refused with a retryable error stays queued and is sent again with the same id", async () => {
  const { client, clock, opened } = makeClient();
  await client.connect();
  const cmid = client.send("Do you ship to Canada?");
  await clock.advance(0);
  const t = opened[0];
  t.ctx.onFrame({ type: "error", code: "buffer_unavailable", message: "down", client_message_id: cmid, retryable: true });
  assert.equal(client.outbox.length, 1, "still queued");
  await alive(clock, t, 6000);
  const sends = t.sent.filter((f) => f.type === "send" && f.client_message_id === cmid);
  assert.equal(sends.length, 2, "sent again after the pause");
  t.ctx.onFrame({ type: "accepted", client_message_id: cmid, stream_id: "s1" });
  assert.equal(client.outbox.length, 0);
});

test("a send refused for good is dropped from the queue and not sent again", async () => {
  const { client, clock, opened } = makeClient();
  await client.connect();
  const cmid = client.send("hi");
  await clock.advance(0);
  opened[0].ctx.onFrame({ type: "error", code: "bad_request", message: "no", client_message_id: cmid });
  assert.equal(client.outbox.length, 0);
  await alive(clock, opened[0], 5000);
  assert.equal(opened[0].sent.filter((f) => f.type === "send").length, 1);
});

test("a followed reply interrupted by a retryable error is resumed from its last seq after a pause", async () => {
  const { client, clock, opened } = makeClient();
  await client.connect();
  const cmid = client.send("hi");
  await clock.advance(0);
  const t = opened[0];
  t.ctx.onFrame({ type: "accepted", client_message_id: cmid, stream_id: "s1" });
  t.ctx.onFrame({ type: "start", stream_id: "s1", seq: 1, conversation_id: "c", client_message_id: cmid });
  t.ctx.onFrame({ type: "delta", stream_id: "s1", seq: 2, text: "Hel" });
  t.ctx.onFrame({ type: "error", code: "buffer_unavailable", message: "down", stream_id: "s1", retryable: true });
  await alive(clock, t, 2500);
  const resumes = t.sent.filter((f) => f.type === "resume");
  assert.deepEqual(resumes.at(-1), { type: "resume", stream_id: "s1", after_seq: 2 });
});
