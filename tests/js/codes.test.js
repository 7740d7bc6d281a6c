"use strict";
// The wire vocabulary (static/src/codes.js). Like every test here it loads the built bundle, the
// file browsers get; tests/test_client_bundle.py keeps the bundle equal to a fresh build.
const test = require("node:test");
const assert = require("node:assert/strict");
const { CLOSE_CODES, ENDS_STREAM, closeAction } = require("../../static/chat-client.js");

const NOW = { reconnect: "now", renegotiate: false };
const BACKOFF = { reconnect: "backoff", renegotiate: false };

test("close codes: 1012 and 1013 come back at once, 4401 renegotiates, anything else backs off", () => {
  assert.deepEqual(closeAction(1012), NOW);
  assert.deepEqual(closeAction(1013), NOW);
  assert.deepEqual(closeAction(4401), { reconnect: "now", renegotiate: true });
  for (const code of [1000, 1006, 1009, 4400, 4403, 4408, 4429]) assert.deepEqual(closeAction(code), BACKOFF, code);
});

test("closeAction follows CLOSE_CODES: a code's name decides what the client does", () => {
  const byName = { shutting_down: NOW, slow_consumer: NOW, unauthorized: { reconnect: "now", renegotiate: true } };
  for (const [code, name] of Object.entries(CLOSE_CODES)) {
    assert.deepEqual(closeAction(Number(code)), byName[name] || BACKOFF, `${code} ${name}`);
  }
  // Every name that acts is in the table, so renaming a code there cannot silently change the client.
  for (const name of Object.keys(byName)) assert.ok(Object.values(CLOSE_CODES).includes(name), name);
});

test("the close-code table is frozen data: WebSocket codes to distinct snake_case names", () => {
  assert.ok(Object.isFrozen(CLOSE_CODES));
  for (const [code, name] of Object.entries(CLOSE_CODES)) {
    assert.match(code, /^(1\d{3}|4\d{3})$/);
    assert.match(name, /^[a-z]+(_[a-z]+)*$/);
  }
  const names = Object.values(CLOSE_CODES);
  assert.equal(new Set(names).size, names.length);
});

test("a dead watchdog comes back at once; codes the table does not know and names alone back off", () => {
  assert.deepEqual(closeAction("watchdog"), NOW);
  for (const code of [undefined, null, 1011, 4404, "sse_error", "network", "send_failed", 503, "unauthorized", "1012"]) {
    assert.deepEqual(closeAction(code), BACKOFF, String(code));
  }
});

test("the seq-less errors that end a stream for good", () => {
  assert.ok(Object.isFrozen(ENDS_STREAM));
  assert.deepEqual([...ENDS_STREAM].sort(), ["forbidden", "not_found", "stream_expired"]);
});
