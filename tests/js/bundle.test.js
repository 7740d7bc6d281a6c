"use strict";
// static/chat-client.js is one classic script built from static/src/ (static/build.py): it must
// load the three documented ways and keep ChatClient one class across its source files.
const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const vm = require("node:vm");

const BUNDLE = path.join(__dirname, "..", "..", "static", "chat-client.js");
const api = require(BUNDLE);
const source = fs.readFileSync(BUNDLE, "utf8");

test("as a classic <script> the bundle sets window.BrandChat, with the names require() gives", () => {
  const window = {};
  vm.runInNewContext(source, { window });
  assert.deepEqual(Object.keys(window.BrandChat), Object.keys(api));
  assert.equal(typeof window.BrandChat.ChatClient, "function");
  assert.deepEqual({ ...window.BrandChat.CLOSE_CODES }, { ...api.CLOSE_CODES });
});

test("with neither window nor module.exports (a worker) it sets globalThis.BrandChat", () => {
  const context = vm.createContext({});
  vm.runInContext(source, context);
  assert.deepEqual(Object.keys(context.BrandChat), Object.keys(api));
});

test("ChatClient's methods from client-session.js and client-frames.js are its own, as in one class body", () => {
  const proto = api.ChatClient.prototype;
  for (const name of ["connect", "_persist", "_negotiate", "_loadHistory", "_onFrame", "_onStreamEvent"]) {
    assert.equal(typeof proto[name], "function", name);
    assert.ok(Object.prototype.hasOwnProperty.call(proto, name), name);
  }
  assert.deepEqual(Object.keys(proto), [], "class methods are not enumerable");
});
