"use strict";
// A send the server refuses for now (rate_limited, conversation_busy: PROTOCOL §9) stays queued,
// is shown as delayed, and goes again when allowed; messages keep their order.
const test = require("node:test");
const assert = require("node:assert/strict");
const { SseTransport, SEND_AGAIN } = require("../../static/chat-client.js");
const { makeClient, replyEvents } = require("./fakes.js");

const sends = (t) => t.sent.filter((f) => f.type === "send").map((f) => f.client_message_id);

test("the refusals that keep a message queued are rate_limited, conversation_busy and buffer_unavailable", () => {
  assert.deepEqual([...SEND_AGAIN].sort(), ["buffer_unavailable", "conversation_busy", "rate_limited"]);
});

test("a rate-limited send is kept, shown as delayed, and sent again after retry_after_ms, in order", async () => {
  const { client, clock, opened } = makeClient();
  const delayed = [];
  client.on("delayed", (e) => delayed.push(e));
  const errors = [];
  client.on("error", (e) => errors.push(e));
  await client.connect();
  const first = client.send("one");
  const ws = opened[0];
  ws.ctx.onFrame({ type: "error", code: "rate_limited", message: "slow down", client_message_id: first, retry_after_ms: 3000 });
  const second = client.send("two"); // typed while the first waits: it waits behind it
  assert.deepEqual(sends(ws), [first]);
  assert.deepEqual(delayed, [{ client_message_id: first, code: "rate_limited", message: "slow down", retry_in_ms: 3000 }]);
  assert.equal(errors.length, 0, "not an error: the message is not lost");
  // The server keeps the socket alive meanwhile (its heartbeat).
  for (const step of [500, 500, 500, 500, 500, 400]) {
    ws.ctx.onFrame({ type: "ping" });
    await clock.advance(step);
  }
  assert.deepEqual(sends(ws), [first]);
  ws.ctx.onFrame({ type: "ping" });
  await clock.advance(200);
  assert.equal(opened.length, 1);
  assert.deepEqual(sends(ws), [first, first, second]);
  ws.ctx.onFrame({ type: "accepted", client_message_id: first, stream_id: "s1" });
  assert.deepEqual(
    client.outbox.map((m) => m.client_message_id),
    [second]
  );
});

test("a conversation_busy send goes again as soon as the running reply ends", async () => {
  const { client, clock, opened } = makeClient({ options: { busyRetryMs: 60000 } });
  await client.connect();
  const first = client.send("one");
  const ws = opened[0];
  ws.ctx.onFrame({ type: "accepted", client_message_id: first, stream_id: "s1" });
  const events = replyEvents("s1", ["Hi ", "there."], { cmid: first });
  ws.ctx.onFrame(events[0]);
  const second = client.send("two");
  ws.ctx.onFrame({ type: "error", code: "conversation_busy", message: "busy", client_message_id: second });
  await clock.advance(1000);
  assert.deepEqual(sends(ws), [first, second]);
  events.slice(1).forEach((e) => ws.ctx.onFrame(e)); // … done
  await clock.advance(0);
  assert.deepEqual(sends(ws), [first, second, second]);
});

test("a refusal for good still drops the message and reports an error", async () => {
  const { client, opened, events } = makeClient();
  await client.connect();
  const cmid = client.send("one");
  opened[0].ctx.onFrame({ type: "error", code: "bad_request", message: "no", client_message_id: cmid });
  assert.equal(client.outbox.length, 0);
  assert.equal(events.filter((e) => e.name === "error").length, 1);
});

function response(status, body, headers = {}) {
  return {
    status,
    ok: status >= 200 && status < 300,
    headers: { get: (name) => headers[name.toLowerCase()] ?? null },
    json: async () => {
      if (body === undefined) throw new SyntaxError("not JSON");
      return body;
    },
  };
}

async function postOver(res) {
  const frames = [];
  const lost = [];
  const transport = new SseTransport({
    request: async () => res,
    messagesUrl: "/v1/conversations/c/messages",
    onFrame: (f) => frames.push(f),
    onClose: (info) => lost.push(info),
  });
  await transport.send({ type: "send", client_message_id: "m1", text: "hi" });
  return { frames, lost };
}

test("over SSE a 429 is a rate_limited refusal carrying the wait, not a lost transport", async () => {
  const body = { error: { code: "rate_limited", message: "slow down", retry_after_ms: 4200 } };
  const { frames, lost } = await postOver(response(429, body, { "retry-after": "5" }));
  assert.deepEqual(lost, []);
  assert.equal(frames.length, 1);
  assert.equal(frames[0].code, "rate_limited");
  assert.equal(frames[0].retry_after_ms, 4200);
  assert.equal(frames[0].client_message_id, "m1");
});

test("over SSE a proxy's bare 429 waits for its Retry-After, and a 409 is conversation_busy", async () => {
  const bare = await postOver(response(429, undefined, { "retry-after": "7" }));
  assert.equal(bare.frames[0].code, "rate_limited");
  assert.equal(bare.frames[0].retry_after_ms, 7000);
  const busy = await postOver(response(409, { error: { code: "conversation_busy", message: "busy" } }));
  assert.equal(busy.frames[0].code, "conversation_busy");
});
