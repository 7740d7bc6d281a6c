"use strict";
// identify (docs/client.md, "Signed-in users"): the identity rides on every negotiate, an identify
// after the conversation started binds it at once, another user gets a new conversation, and a
// refused hash is one fatal `identity_invalid` error, never a quiet anonymous chat.
const test = require("node:test");
const assert = require("node:assert/strict");
const { makeClient } = require("./fakes.js");

test("an identity given before connecting goes with the first negotiate and the verified user is kept", async () => {
  const { client, server } = makeClient({ options: { locale: "de_DE" } });
  server.validHashes.add("h-ann");
  const identified = [];
  client.on("identified", (u) => identified.push(u));
  await client.identify({ user_id: "ann", user_hash: "h-ann", name: " Ann ", email: "ann@example.com" });
  assert.equal(server.negotiations.length, 0, "nothing negotiated before it is needed");
  await client.connect();
  assert.deepEqual(server.negotiations[0].user, { id: "ann", hash: "h-ann", name: "Ann", email: "ann@example.com" });
  assert.equal(server.negotiations[0].locale, "de-DE");
  assert.deepEqual(client.user, { id: "ann", name: "Ann" });
  assert.deepEqual(identified, [{ id: "ann", name: "Ann", conversation_id: "c_test" }]);
});

test("identify after the conversation started negotiates again at once and binds the same conversation", async () => {
  const { client, server } = makeClient();
  server.validHashes.add("h-ann");
  await client.connect();
  client.send("hello");
  assert.equal(server.negotiations.length, 1);
  const user = await client.identify({ user_id: "ann", user_hash: "h-ann" });
  assert.deepEqual(user, { id: "ann", name: null });
  const again = server.negotiations[1];
  assert.equal(again.conversation_id, "c_test");
  assert.equal(again.user.id, "ann");
  assert.equal(client.conversationId, "c_test");
});

test("identifying as another user starts a new conversation instead of continuing the first one's", async () => {
  const { client, server, events } = makeClient();
  server.validHashes.add("h-ann").add("h-bob");
  const resets = [];
  client.on("reset", (e) => resets.push(e.reason));
  await client.identify({ user_id: "ann", user_hash: "h-ann" });
  await client.connect();
  client.send("ann's question");
  await client.identify({ user_id: "bob", user_hash: "h-bob" });
  await client.connect();
  assert.deepEqual(resets, ["identity"]);
  const last = server.negotiations[server.negotiations.length - 1];
  assert.equal(last.conversation_id, undefined, "Bob never sends Ann's conversation or token");
  assert.equal(last.user.id, "bob");
  assert.notEqual(client.conversationId, "c_test");
  assert.equal(client.outbox.length, 0, "Ann's unsent message does not go out as Bob");
  assert.equal(events.filter((e) => e.name === "error").length, 0);
});

test("a refused hash is one fatal identity_invalid error, and nothing connects anonymously", async () => {
  const { client, server, opened } = makeClient();
  const errors = [];
  client.on("error", (e) => errors.push(e));
  await client.identify({ user_id: "ann", user_hash: "forged" });
  await assert.rejects(client.connect(), /client closed|does not match/);
  assert.deepEqual(errors, [
    { code: "identity_invalid", message: "user.hash does not match user.id for this brand", retryable: false, fatal: true },
  ]);
  assert.equal(opened.length, 0);
  assert.equal(client.state, "closed");
  assert.ok(server.negotiations.every((b) => b.user && b.user.hash === "forged"));
  // identify with a good hash, then connect: it works.
  server.validHashes.add("h-ann");
  await client.identify({ user_id: "ann", user_hash: "h-ann" });
  await client.connect();
  assert.equal(client.state, "connected");
  assert.deepEqual(client.user, { id: "ann", name: null });
});

test("identify without a user id throws; logout forgets the user and the conversation", async () => {
  const { client, server } = makeClient();
  server.validHashes.add("h-ann");
  assert.throws(() => client.identify({ user_hash: "h-ann" }), TypeError);
  await client.identify({ user_id: "ann", user_hash: "h-ann" });
  await client.connect();
  const resets = [];
  client.on("reset", (e) => resets.push(e.reason));
  client.logout();
  await client.connect();
  assert.deepEqual(resets, ["logout"]);
  const last = server.negotiations[server.negotiations.length - 1];
  assert.equal(last.user, undefined);
  assert.equal(last.conversation_id, undefined);
  assert.equal(client.user, null);
});

test("setLocale keeps a valid tag, ignores garbage, and tells the server at once once negotiated", async () => {
  const { client, server } = makeClient();
  await client.connect();
  assert.equal(server.negotiations[0].locale, undefined);
  assert.equal(client.setLocale("not a tag!"), null);
  assert.equal(client.setLocale("fr"), "fr");
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  assert.equal(server.negotiations[server.negotiations.length - 1].locale, "fr");
});

test("after a reload, identifying as someone else than the saved conversation's user never sends its token", async () => {
  const { client, server } = makeClient({
    session: { conversation_id: "c_ann", token: "tok-ann", started: true, outbox: [], user: { id: "ann" } },
  });
  server.validHashes.add("h-bob");
  const resets = [];
  client.on("reset", (e) => resets.push(e.reason));
  assert.deepEqual(client.user, { id: "ann", name: null });
  await client.identify({ user_id: "bob", user_hash: "h-bob" });
  await client.connect();
  assert.deepEqual(resets, ["identity"]);
  assert.equal(server.negotiations[0].conversation_id, undefined);
  assert.equal(server.negotiations[0].token, undefined);
  assert.equal(client.user.id, "bob");
});
