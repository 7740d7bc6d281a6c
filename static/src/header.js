/*!
 * brandchat browser client — speaks the wire contract (docs/protocol.md v1), no dependencies, nothing to
 * build to use it.
 *
 * One file, three ways to load it:
 *   <script src="/static/chat-client.js"></script>            → window.BrandChat.ChatClient
 *   <script type="module"> import "/static/chat-client.js";   → globalThis.BrandChat.ChatClient
 *   require("./static/chat-client.js") (Node, for the tests)  → { ChatClient, Backoff, ... }
 * It is a classic script on purpose: an `export` statement would break the plain <script> tag that
 * brand sites paste, and importing it as a module still sets the global.
 *
 * Shape: the sources are one file per role in static/src/ — codes.js (close codes as data), core.js
 * (the pure rules: backoff, dedupe by seq, the state machine, the watchdog, transport order),
 * env.js, one file per transport, the ChatClient in client*.js — concatenated by static/build.py
 * into the body of the function below, where they share one scope. docs/client.md explains the
 * state machine and the downgrade rules.
 */
(function (root, factory) {
  "use strict";
  const api = factory();
  if (typeof module === "object" && module && module.exports) module.exports = api;
  if (typeof window !== "undefined") window.BrandChat = api;
  else if (root && !(typeof module === "object" && module && module.exports)) root.BrandChat = api;
})(typeof globalThis !== "undefined" ? globalThis : this, function () {
  "use strict";
