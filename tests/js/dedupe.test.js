"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { ReplyState } = require("../../static/chat-client.js");
const { makeClient, replyEvents } = require("./fakes.js");

const WORDS = ["Hey ", "there, ", "coffee ", "friend! ", "We ", "roast ", "on ", "Mondays."];

test("a reply applies each seq once, in order, and ignores what it has already seen", () => {
  const reply = new ReplyState("s1");
  const events = replyEvents("s1", WORDS);
  const verdicts = [];
  // The first five, then a resume overlap that replays 3..5, then the rest.
  for (const e of events.slice(0, 5)) verdicts.push(reply.apply(e));
  for (const e of events.slice(2, 5)) verdicts.push(reply.apply(e));
  for (const e of events.slice(5)) verdicts.push(reply.apply(e));
  assert.deepEqual(verdicts, [
    ...Array(5).fill("applied"),
    ...Array(3).fill("duplicate"),
    ...Array(events.length - 5).fill("applied"),
  ]);
  assert.equal(reply.text, WORDS.join(""));
  assert.equal(reply.status, "done");
  assert.equal(reply.apply(events[events.length - 1]), "finished");
});

test("a seq past the next one is a gap, and the reply waits for it", () => {
  const reply = new ReplyState("s1");
  const events = replyEvents("s1", WORDS);
  reply.apply(events[0]);
  reply.apply(events[1]);
  assert.equal(reply.apply(events[3]), "gap");
  assert.equal(reply.lastSeq, 2);
  assert.equal(reply.apply(events[2]), "applied");
  assert.equal(reply.apply(events[3]), "applied");
});

test("retract replaces everything streamed so far, and later deltas append to its text", () => {
  const reply = new ReplyState("s1");
  reply.apply({ type: "start", stream_id: "s1", seq: 1, client_message_id: "m1" });
  reply.apply({ type: "delta", stream_id: "s1", seq: 2, text: "Something off-brand" });
  reply.apply({ type: "retract", stream_id: "s1", seq: 3, reason: "guard", text: "Sorry, " });
  reply.apply({ type: "delta", stream_id: "s1", seq: 4, text: "let me help." });
  assert.equal(reply.text, "Sorry, let me help.");
  reply.apply({ type: "done", stream_id: "s1", seq: 5, finish_reason: "fallback", text: "Sorry, let me help." });
  assert.equal(reply.finish_reason, "fallback");
});

test("the client emits every word once when a resume replays events it already holds", async () => {
  const { client, clock, opened, events } = makeClient();
  await client.connect();
  const cmid = client.send("When do you roast?");
  const ws = opened[0];
  ws.ctx.onFrame({ type: "accepted", client_message_id: cmid, stream_id: "s1" });
  const all = replyEvents("s1", WORDS, { cmid });
  all.slice(0, 5).forEach((e) => ws.ctx.onFrame(e));
  // The socket dies; the client comes back and resumes after seq 5 …
  ws.ctx.onClose({ code: 1006 });
  await clock.advance(1000);
  const ws2 = opened[1];
  assert.deepEqual(
    ws2.sent.filter((f) => f.type === "resume"),
    [{ type: "resume", stream_id: "s1", after_seq: 5 }]
  );
  // … and the server (say, an overlap after a re-read of the log) sends 4.. again.
  all.slice(3).forEach((e) => ws2.ctx.onFrame(e));
  const deltas = events.filter((e) => e.name === "delta").map((e) => e.delta);
  assert.deepEqual(deltas, WORDS);
  const done = events.filter((e) => e.name === "done");
  assert.equal(done.length, 1);
  assert.equal(done[0].text, WORDS.join(""));
});

test("a resent message that the server had accepted replays from seq 1 without doubling a word", async () => {
  const { client, clock, opened, events } = makeClient();
  await client.connect();
  const cmid = client.send("When do you roast?");
  const ws = opened[0];
  const all = replyEvents("s1", WORDS, { cmid });
  // The accept was lost with the connection: the message is still queued and goes again.
  ws.ctx.onClose({ code: 1006 });
  await clock.advance(1000);
  const ws2 = opened[1];
  assert.deepEqual(ws2.sent.filter((f) => f.type === "send").map((f) => f.client_message_id), [cmid]);
  ws2.ctx.onFrame({ type: "accepted", client_message_id: cmid, stream_id: "s1" });
  all.forEach((e) => ws2.ctx.onFrame(e));
  all.forEach((e) => ws2.ctx.onFrame(e)); // a duplicate replay changes nothing
  assert.equal(events.filter((e) => e.name === "delta").map((e) => e.delta).join(""), WORDS.join(""));
  assert.equal(events.filter((e) => e.name === "done").length, 1);
  assert.equal(client.outbox.length, 0);
});

test("a gap makes the client ask for a resume from the last seq it holds, once", async () => {
  const { client, opened } = makeClient();
  await client.connect();
  const ws = opened[0];
  const all = replyEvents("s1", WORDS);
  ws.ctx.onFrame(all[0]);
  ws.ctx.onFrame(all[1]);
  ws.ctx.onFrame(all[4]);
  ws.ctx.onFrame(all[5]);
  assert.deepEqual(
    ws.sent.filter((f) => f.type === "resume"),
    [{ type: "resume", stream_id: "s1", after_seq: 2 }]
  );
});

test("a history reply still streaming is resumed from seq 0 and rebuilt without repeating the shown text", async () => {
  const session = { conversation_id: "c_test", token: "old", started: true, outbox: [] };
  const { client, server, opened, events } = makeClient({ session });
  server.historyTurns = [
    { role: "user", text: "When do you roast?", client_message_id: "m0" },
    { role: "assistant", text: WORDS.slice(0, 3).join(""), stream_id: "s9", status: "streaming" },
  ];
  await client.connect();
  const history = events.filter((e) => e.name === "history");
  assert.equal(history.length, 1);
  assert.equal(history[0].turns.length, 2);
  const ws = opened[0];
  assert.deepEqual(ws.sent, [{ type: "resume", stream_id: "s9", after_seq: 0 }]);
  replyEvents("s9", WORDS, { cmid: "m0" }).forEach((e) => ws.ctx.onFrame(e));
  const texts = events.filter((e) => e.name === "delta").map((e) => e.text);
  // Nothing shorter than what history already drew on screen.
  assert.equal(texts[0], WORDS.slice(0, 4).join(""));
  assert.equal(events.find((e) => e.name === "done").text, WORDS.join(""));
});

test("a stream_expired error ends the reply and tells the UI", async () => {
  const { client, opened, events } = makeClient();
  await client.connect();
  const ws = opened[0];
  ws.ctx.onFrame(replyEvents("s1", WORDS)[0]);
  ws.ctx.onFrame({ type: "error", code: "stream_expired", message: "gone", stream_id: "s1", retryable: false });
  const err = events.find((e) => e.name === "error");
  assert.equal(err.code, "stream_expired");
  assert.equal(client.replies.get("s1").status, "error");
});
