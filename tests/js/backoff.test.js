"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { Backoff, backoffDelay, Watchdog, DEFAULTS } = require("../../static/chat-client.js");

test("full jitter picks uniformly below a cap that doubles from 0.5 s up to 20 s", () => {
  const caps = [0, 1, 2, 3, 4, 5, 6, 7, 10].map((a) => backoffDelay(a, 500, 20000, () => 0.999999));
  assert.deepEqual(caps, [499, 999, 1999, 3999, 7999, 15999, 19999, 19999, 19999]);
  for (let a = 0; a < 12; a++) assert.equal(backoffDelay(a, 500, 20000, () => 0), 0);
});

test("the defaults are about 0.5 s to 20 s", () => {
  assert.equal(DEFAULTS.backoffBaseMs, 500);
  assert.equal(DEFAULTS.backoffMaxMs, 20000);
});

test("every attempt recomputes the jitter instead of reusing one random pick", () => {
  const picks = [0.1, 0.9, 0.3];
  const backoff = new Backoff({ baseMs: 1000, maxMs: 100000, random: () => picks.shift() });
  assert.deepEqual([backoff.next(), backoff.next(), backoff.next()], [100, 1800, 1200]);
});

test("a huge attempt count never overflows the cap", () => {
  assert.equal(backoffDelay(5000, 500, 20000, () => 0.5), 10000);
});

test("the backoff resets only after a connection stayed up long enough", () => {
  const backoff = new Backoff({ baseMs: 500, maxMs: 20000, resetAfterMs: 10000, random: () => 0.999 });
  backoff.next();
  backoff.next();
  backoff.next();
  assert.equal(backoff.attempt, 3);
  // Up for 2 s and dropped: a server that accepts and drops at once keeps us backing off.
  backoff.connected(0);
  backoff.disconnected(2000);
  assert.equal(backoff.attempt, 3);
  assert.ok(backoff.next() > 3000);
  // Up for 10 s: healthy again, the next failure starts from the small delay.
  backoff.connected(5000);
  backoff.disconnected(15000);
  assert.equal(backoff.attempt, 0);
  assert.ok(backoff.next() < 500);
});

test("the watchdog pings once after one heartbeat of silence and calls the connection dead after two", () => {
  const dog = new Watchdog(1000);
  dog.reset(0, 1000);
  assert.equal(dog.check(999), "ok");
  assert.equal(dog.check(1000), "ping");
  assert.equal(dog.check(1500), "ok"); // one ping per silence
  assert.equal(dog.check(1999), "ok");
  assert.equal(dog.check(2000), "dead");
  dog.touch(2000);
  assert.equal(dog.check(2500), "ok");
  assert.equal(dog.check(3000), "ping");
});

test("a probe (tab visible again) declares the connection dead when unanswered in time", () => {
  const dog = new Watchdog(15000);
  dog.reset(0, 15000);
  dog.probe(100, 5000);
  assert.equal(dog.check(5000), "ok");
  assert.equal(dog.check(5100), "dead");
  dog.reset(0, 15000);
  dog.probe(100, 5000);
  dog.touch(200); // the pong came
  assert.equal(dog.check(5100), "ok");
});
