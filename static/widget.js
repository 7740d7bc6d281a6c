/*!
 * brandchat widget — the embed. One tag on a brand's page:
 *
 *   <script src="https://chat.example.com/static/widget.js" data-brand="demo" defer></script>
 *
 * Attributes: data-brand (brand id), data-server (chat server; default: where this file came
 * from), data-open="true" (start open), data-suggestions="Question one|Question two",
 * data-options='{"connectTimeoutMs": 4000}' (any ChatClient DEFAULTS key), data-position="left"
 * (default right), data-launcher-text="Chat with us" (a labelled launcher instead of the round one).
 *
 * JS API: `brandchat(command, ...args)`, with a queue that works before this file loads (paste the
 * one-line stub of docs/client.md above the tag): open, close, toggle, showLauncher, hideLauncher,
 * on(event, fn) / off(event, fn) for the events open, close, message and state.
 *
 * It loads chat-client.js from the same place, draws a launcher and a chat panel inside a Shadow
 * DOM (the host page's CSS cannot reach in, ours cannot leak out) and exposes the running widget
 * as window.BrandChatWidget (`.open()`, `.close()`, `.chat` — the ChatClient). See docs/client.md.
 */
(function () {
  "use strict";
  if (typeof window === "undefined" || window.BrandChatWidget) return;

  // The hash of chat-client.js, stamped by static/build.py (`make client`): the client's URL changes
  // with its content, so the server lets browsers keep it for a year.
  const CLIENT_VERSION = "4acee56b12da4218";
  const script =
    document.currentScript || document.querySelector("script[data-brand][src*='widget.js'], script[src*='widget.js']");
  const scriptUrl = new URL((script && script.src) || "/static/widget.js", location.href);
  const data = (script && script.dataset) || {};
  const config = {
    brand: data.brand || "demo",
    server: data.server || scriptUrl.origin,
    open: data.open === "true",
    suggestions: (data.suggestions || "")
      .split("|")
      .map((s) => s.trim())
      .filter(Boolean),
    options: parseJson(data.options) || {},
    position: data.position === "left" ? "left" : "right",
    launcherText: (data.launcherText || "").trim().slice(0, 40),
  };

  function parseJson(text) {
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch (_) {
      console.warn("brandchat: data-options is not valid JSON; ignored");
      return null;
    }
  }

  function loadClient() {
    if (window.BrandChat && window.BrandChat.ChatClient) return Promise.resolve(window.BrandChat);
    return new Promise((resolve, reject) => {
      const tag = document.createElement("script");
      tag.src = new URL("chat-client.js?v=" + CLIENT_VERSION, scriptUrl).toString();
      tag.async = true;
      tag.onload = () => resolve(window.BrandChat);
      tag.onerror = () => reject(new Error("could not load " + tag.src));
      document.head.appendChild(tag);
    });
  }

  // --- colours: brand theme, with text that stays readable on it ---------------------------------

  function parseHex(hex) {
    const m = /^#?([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(String(hex || "").trim());
    if (!m) return null;
    let h = m[1];
    if (h.length === 3) h = h.replace(/./g, "$&$&");
    return [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16));
  }

  function luminance(rgb) {
    const [r, g, b] = rgb.map((v) => {
      const c = v / 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }

  function readableOn(hex) {
    const rgb = parseHex(hex);
    if (!rgb) return "#ffffff";
    return luminance(rgb) > 0.4 ? "#1b1b1b" : "#ffffff";
  }

  const STATUS_TEXT = {
    idle: "",
    connecting: "Connecting…",
    connected: "Online",
    reconnecting: "Reconnecting…",
    offline: "You're offline — messages will be sent when you're back",
    closed: "Disconnected",
  };

  const ICON_CHAT =
    '<svg viewBox="0 0 24 24" width="28" height="28" aria-hidden="true" focusable="false"><path fill="currentColor" d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zm3 6.25a1.25 1.25 0 1 0 0 2.5 1.25 1.25 0 0 0 0-2.5zm5 0a1.25 1.25 0 1 0 0 2.5 1.25 1.25 0 0 0 0-2.5zm5 0a1.25 1.25 0 1 0 0 2.5 1.25 1.25 0 0 0 0-2.5z"/></svg>';
  const ICON_DOWN =
    '<svg viewBox="0 0 24 24" width="26" height="26" aria-hidden="true" focusable="false"><path fill="none" stroke="currentColor" stroke-width="2.4" stroke-linecap="round" stroke-linejoin="round" d="M6 9l6 6 6-6"/></svg>';
  const ICON_CLOSE =
    '<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false"><path fill="none" stroke="currentColor" stroke-width="2.2" stroke-linecap="round" d="M6 6l12 12M18 6L6 18"/></svg>';
  const ICON_SEND =
    '<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false"><path fill="currentColor" d="M3.4 20.4l17.45-7.48a1 1 0 0 0 0-1.84L3.4 3.6a.99.99 0 0 0-1.39.91L2 9.12c0 .5.37.93.87.99L17 12 2.87 13.88c-.5.07-.87.5-.87 1l.01 4.61c0 .71.73 1.2 1.39.91z"/></svg>';
  const ICON_STOP =
    '<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" focusable="false"><rect x="5" y="5" width="14" height="14" rx="2.5" fill="currentColor"/></svg>';

  const CSS = `
    /* The host element is in the page's tree: its rules (even "* { … !important }") reach it and
       its inherited properties would flow in. !important here wins over the page's !important on
       the host, and .bc resets everything inherited for what is inside. */
    :host { all: initial !important; display: block !important; position: fixed !important;
      z-index: 2147483000 !important; right: 20px !important; bottom: 20px !important;
      --bc-primary: #3b2f2f; --bc-on-primary: #fff; --bc-accent: #c8742c; --bc-on-accent: #fff; }
    .bc { all: initial; display: block; color: #1f1f1f; letter-spacing: normal; word-spacing: normal;
      text-align: left; text-transform: none; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto,
      "Helvetica Neue", Arial, sans-serif; }
    *, *::before, *::after { box-sizing: border-box; }
    [hidden] { display: none !important; }
    .sr-only { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden;
      clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
    button { font: inherit; cursor: pointer; }
    :focus-visible { outline: 3px solid var(--bc-accent); outline-offset: 2px; }

    .launcher { width: 60px; height: 60px; border-radius: 50%; border: 0; display: grid; place-items: center;
      background: var(--bc-accent); color: var(--bc-on-accent); margin-left: auto;
      box-shadow: 0 6px 20px rgba(0,0,0,.22), 0 2px 6px rgba(0,0,0,.14); transition: transform .15s ease; }
    .launcher:hover { transform: translateY(-2px); }
    :host([data-position="left"]) { left: 20px !important; right: auto !important; }
    :host([data-position="left"]) .panel { left: 0; right: auto; }
    :host([data-position="left"]) .launcher { margin-left: 0; margin-right: auto; }
    .launcher.with-text { width: auto; border-radius: 30px; padding: 0 20px 0 16px; grid-auto-flow: column; gap: 8px;
      font-weight: 600; }
    .launcher.with-text .when-open { display: none; }
    .launcher-text { white-space: nowrap; }
    .launcher .when-open { display: none; }
    .launcher[aria-expanded="true"] .when-open { display: block; }
    .launcher[aria-expanded="true"] .when-closed { display: none; }

    .panel { position: absolute; right: 0; bottom: 76px; width: 380px; height: min(620px, calc(100vh - 120px));
      display: flex; flex-direction: column; background: #fff; border-radius: 18px; overflow: hidden;
      box-shadow: 0 18px 50px rgba(0,0,0,.22), 0 4px 12px rgba(0,0,0,.10);
      animation: bc-rise .18s ease-out; }
    @keyframes bc-rise { from { opacity: 0; transform: translateY(12px); } to { opacity: 1; transform: none; } }

    header { display: flex; align-items: center; gap: 12px; padding: 14px 14px 14px 16px;
      background: var(--bc-primary); color: var(--bc-on-primary); }
    .avatar { flex: none; width: 40px; height: 40px; border-radius: 50%; display: grid; place-items: center;
      background: var(--bc-accent); color: var(--bc-on-accent); font-weight: 700; font-size: 17px; }
    .who { flex: 1; min-width: 0; }
    .who h2 { margin: 0; font-size: 16px; font-weight: 650; line-height: 1.25; }
    .sub { margin: 0; font-size: 12.5px; opacity: .85; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
    .status { display: inline-flex; align-items: center; gap: 6px; }
    .dot { width: 8px; height: 8px; border-radius: 50%; background: #9aa0a6; flex: none; }
    .bc[data-state="connected"] .dot { background: #34c16b; }
    .bc[data-state="connecting"] .dot, .bc[data-state="reconnecting"] .dot { background: #f2b233; animation: bc-pulse 1s infinite; }
    .bc[data-state="offline"] .dot, .bc[data-state="closed"] .dot { background: #e0665a; }
    @keyframes bc-pulse { 50% { opacity: .35; } }
    .close { flex: none; width: 36px; height: 36px; border: 0; border-radius: 10px; background: transparent;
      color: inherit; display: grid; place-items: center; }
    .close:hover { background: rgba(255,255,255,.14); }

    .demo-note { margin: 0; padding: 8px 16px; font-size: 12.5px; line-height: 1.35; color: #5b4a1f;
      background: #fff6dc; border-bottom: 1px solid #f1e2b5; }
    .notice { margin: 8px auto; padding: 6px 12px; font-size: 12.5px; color: #555; background: #f1f1f1;
      border-radius: 10px; text-align: center; max-width: 90%; }

    .log { flex: 1; overflow-y: auto; padding: 16px 14px 8px; background: #faf8f6; overscroll-behavior: contain; }
    .msg { display: flex; flex-direction: column; margin: 0 0 10px; max-width: 86%; }
    .msg.user { margin-left: auto; align-items: flex-end; }
    .bubble { padding: 9px 13px; border-radius: 16px; white-space: pre-wrap; overflow-wrap: anywhere; }
    .msg.user .bubble { background: var(--bc-primary); color: var(--bc-on-primary); border-bottom-right-radius: 5px; }
    .msg.bot .bubble { background: #fff; color: #1f1f1f; border: 1px solid #ece7e2; border-bottom-left-radius: 5px;
      box-shadow: 0 1px 2px rgba(0,0,0,.04); }
    .msg.bot.failed .bubble { border-color: #f0c4bf; background: #fff7f6; }
    .meta { font-size: 12px; color: #6b6b6b; margin: 3px 6px 0; }
    .msg.user.queued .bubble { opacity: .75; }
    .typing { display: inline-flex; gap: 4px; padding: 4px 0; }
    .typing i { width: 7px; height: 7px; border-radius: 50%; background: #b9b2ab; animation: bc-blink 1.2s infinite; }
    .typing i:nth-child(2) { animation-delay: .2s; } .typing i:nth-child(3) { animation-delay: .4s; }
    @keyframes bc-blink { 0%, 80%, 100% { opacity: .25; } 40% { opacity: 1; } }
    .cursor::after { content: "▍"; color: var(--bc-accent); margin-left: 1px; animation: bc-pulse 1s infinite; }

    .chips { display: flex; flex-wrap: wrap; gap: 6px; margin: 4px 0 10px; }
    .chip { border: 1px solid var(--bc-accent); color: var(--bc-primary); background: #fff; border-radius: 999px;
      padding: 5px 11px; font-size: 13px; }
    .chip:hover { background: #fff4ea; }

    form { display: flex; align-items: flex-end; gap: 8px; padding: 10px 12px 12px; border-top: 1px solid #eee8e2; background: #fff; }
    textarea { flex: 1; resize: none; border: 1px solid #d9d2cb; border-radius: 14px; padding: 9px 12px; font: inherit;
      max-height: 120px; min-height: 40px; line-height: 1.4; color: #1f1f1f; background: #fff; }
    textarea:focus { outline: none; border-color: var(--bc-accent); box-shadow: 0 0 0 3px rgba(200,116,44,.18); }
    .send, .stop { flex: none; width: 40px; height: 40px; border-radius: 50%; border: 0; display: grid; place-items: center; }
    .send { background: var(--bc-accent); color: var(--bc-on-accent); }
    .stop { background: #fff; color: var(--bc-primary); border: 1.5px solid var(--bc-primary); }
    .composer-error { margin: 0; padding: 0 14px 8px; font-size: 12.5px; color: #b3261e; background: #fff; }

    @media (max-width: 480px) {
      :host { right: 12px !important; bottom: 12px !important; }
      :host([data-position="left"]) { left: 12px !important; right: auto !important; }
      .panel { position: fixed; inset: 0; width: auto; height: auto; border-radius: 0; animation: none; }
      .bc.open .launcher { display: none; }
      .msg { max-width: 90%; }
      textarea { font-size: 16px; } /* below 16px iOS zooms the page on focus */
    }
    @media (prefers-reduced-motion: reduce) { * { animation: none !important; transition: none !important; } }
  `;

  const HTML = `
    <div class="bc" data-state="idle">
      <section class="panel" id="panel" role="dialog" aria-modal="false" aria-labelledby="title" hidden>
        <header>
          <div class="avatar" aria-hidden="true"></div>
          <div class="who">
            <h2 id="title">Chat</h2>
            <p class="sub"><span class="brand-name"></span></p>
            <p class="sub status" role="status"><span class="dot" aria-hidden="true"></span><span class="status-text"></span></p>
          </div>
          <button type="button" class="close" aria-label="Close chat">${ICON_CLOSE}</button>
        </header>
        <p class="demo-note" hidden>Offline demo — answers come from the brand's FAQ, not an AI model</p>
        <div class="log" role="log" aria-live="polite" aria-label="Conversation" tabindex="0">
          <div class="history"></div>
          <div class="live"></div>
        </div>
        <p class="composer-error" role="alert" hidden></p>
        <form novalidate>
          <label class="sr-only" for="input">Your message</label>
          <textarea id="input" rows="1" autocomplete="off" enterkeyhint="send" placeholder="Type your question…"></textarea>
          <button type="button" class="stop" aria-label="Stop the reply" hidden>${ICON_STOP}</button>
          <button type="submit" class="send" aria-label="Send message">${ICON_SEND}</button>
        </form>
      </section>
      <button type="button" class="launcher" aria-haspopup="dialog" aria-expanded="false" aria-controls="panel" aria-label="Open chat">
        <span class="when-closed">${ICON_CHAT}</span><span class="when-open">${ICON_DOWN}</span><span class="launcher-text" hidden></span>
      </button>
    </div>`;

  class Widget {
    constructor(cfg) {
      this.cfg = cfg;
      this.chat = null;
      // A custom element name: the page's `div { … }` rules cannot match the host.
      this.host = document.createElement("brandchat-widget");
      this.host.id = "brandchat-widget";
      this.shadow = this.host.attachShadow({ mode: "open" });
      this.shadow.innerHTML = "<style>" + CSS + "</style>" + HTML;
      const $ = (sel) => this.shadow.querySelector(sel);
      this.el = {
        root: $(".bc"),
        launcher: $(".launcher"),
        panel: $(".panel"),
        title: $("#title"),
        brandName: $(".brand-name"),
        avatar: $(".avatar"),
        status: $(".status-text"),
        demo: $(".demo-note"),
        log: $(".log"),
        history: $(".history"),
        live: $(".live"),
        form: $("form"),
        input: $("textarea"),
        send: $(".send"),
        stop: $(".stop"),
        close: $(".close"),
        error: $(".composer-error"),
        label: $("label"),
      };
      this.users = new Map(); // client_message_id → element
      this.bots = new Map(); // stream_id → element
      this.streaming = new Set();
      this.openKey = "brandchat:v1:widget-open:" + cfg.brand;
      this.persona = "our assistant";
      this.listeners = { open: new Set(), close: new Set(), message: new Set(), state: new Set() };
      if (cfg.position === "left") this.host.setAttribute("data-position", "left");
      if (cfg.launcherText) {
        const label = this.shadow.querySelector(".launcher-text");
        label.textContent = cfg.launcherText;
        label.hidden = false;
        this.el.launcher.classList.add("with-text");
      }
      this._bindUi();
      this._intro();
    }

    // --- public ------------------------------------------------------------------------------------

    open() {
      if (!this.el.panel.hidden) return;
      this.el.panel.hidden = false;
      this.el.root.classList.add("open");
      this.el.launcher.setAttribute("aria-expanded", "true");
      this.el.launcher.setAttribute("aria-label", "Close chat");
      this._remember(true);
      if (this.chat && (this.chat.state === "idle" || this.chat.state === "closed")) this.chat.connect().catch(() => undefined);
      this._scrollToEnd(true);
      this.el.input.focus();
      this._emitApi("open", {});
    }

    close() {
      if (this.el.panel.hidden) return;
      this.el.panel.hidden = true;
      this.el.root.classList.remove("open");
      this.el.launcher.setAttribute("aria-expanded", "false");
      this.el.launcher.setAttribute("aria-label", "Open chat with " + this.persona);
      this._remember(false);
      if (!this.el.launcher.hidden) this.el.launcher.focus();
      this._emitApi("close", {});
    }

    toggle() {
      if (this.isOpen) this.close();
      else this.open();
    }

    showLauncher() {
      this.el.launcher.hidden = false;
    }

    hideLauncher() {
      this.el.launcher.hidden = true;
    }

    /** Listen to a widget event (open, close, message, state); returns the function that unsubscribes. */
    on(name, fn) {
      const set = this.listeners[name];
      if (!set) throw new Error("brandchat: unknown widget event " + JSON.stringify(name));
      if (typeof fn !== "function") throw new TypeError("brandchat: on(" + name + ", fn) needs a function");
      set.add(fn);
      return () => this.off(name, fn);
    }

    off(name, fn) {
      const set = this.listeners[name];
      if (set) set.delete(fn);
    }

    /** `brandchat(command, ...args)`: the page's way in, before and after this file loads. */
    command(name, ...args) {
      const commands = ["open", "close", "toggle", "showLauncher", "hideLauncher", "on", "off"];
      if (commands.indexOf(name) < 0) {
        console.warn("brandchat: unknown command " + JSON.stringify(name) + " (known: " + commands.join(", ") + ")");
        return undefined;
      }
      return this[name](...args);
    }

    _emitApi(name, detail) {
      for (const fn of Array.from(this.listeners[name])) {
        try {
          fn(detail);
        } catch (err) {
          console.error("brandchat: a " + name + " listener failed", err);
        }
      }
    }

    get isOpen() {
      return !this.el.panel.hidden;
    }

    attach(chat) {
      this.chat = chat;
      chat.on("brand", (brand) => this._applyBrand(brand));
      chat.on("state", ({ newState, oldState }) => {
        this._onState(newState);
        this._emitApi("state", { newState, oldState });
      });
      chat.on("queued", (e) => this._onQueued(e));
      chat.on("accepted", (e) => this._onAccepted(e));
      chat.on("delayed", (e) => this._onDelayed(e));
      chat.on("start", (e) => this._bot(e.stream_id, e.client_message_id));
      chat.on("delta", (e) => this._setText(e.stream_id, e.text, e.client_message_id));
      chat.on("retract", (e) => this._setText(e.stream_id, e.text, e.client_message_id));
      chat.on("done", (e) => {
        this._onDone(e);
        const message = { role: "assistant", text: e.text, stream_id: e.stream_id, client_message_id: e.client_message_id };
        this._emitApi("message", Object.assign(message, { finish_reason: e.finish_reason }));
      });
      chat.on("queued", (e) => {
        if (!e.restored) this._emitApi("message", { role: "user", text: e.text, client_message_id: e.client_message_id });
      });
      chat.on("error", (e) => this._onError(e));
      chat.on("history", (e) => this._onHistory(e));
      chat.on("withdrawn", (e) => this._onWithdrawn(e));
      chat.on("reset", (e) => this._onReset(e));
      if (chat.brand) this._applyBrand(chat.brand);
      this._onState(chat.state);
    }

    // --- UI wiring -------------------------------------------------------------------------------

    _bindUi() {
      const { launcher, close, form, input, stop, panel } = this.el;
      launcher.addEventListener("click", () => (this.isOpen ? this.close() : this.open()));
      close.addEventListener("click", () => this.close());
      stop.addEventListener("click", () => {
        if (this.chat) this.chat.cancel();
        input.focus();
      });
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        this._submit(input.value);
      });
      input.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
          ev.preventDefault();
          this._submit(input.value);
        }
      });
      input.addEventListener("input", () => this._autosize());
      panel.addEventListener("keydown", (ev) => {
        if (ev.key === "Escape") {
          ev.stopPropagation();
          this.close();
        }
      });
    }

    _submit(raw) {
      const text = String(raw || "").trim();
      if (!text || !this.chat) return;
      this._showError("");
      try {
        this.chat.send(text);
      } catch (err) {
        this._showError(
          err && err.code === "queue_full"
            ? "A few messages are still waiting to be sent — please wait a moment."
            : (err && err.message) || "That message could not be sent."
        );
        return;
      }
      this.el.input.value = "";
      this._autosize();
      const chips = this.shadow.querySelector(".chips");
      if (chips) chips.remove();
    }

    _autosize() {
      const input = this.el.input;
      input.style.height = "auto";
      input.style.height = Math.min(input.scrollHeight + 2, 120) + "px";
    }

    _showError(text) {
      this.el.error.textContent = text;
      this.el.error.hidden = !text;
    }

    _remember(open) {
      try {
        sessionStorage.setItem(this.openKey, open ? "1" : "0");
      } catch (_) {
        /* storage disabled: the panel just starts closed after a reload */
      }
    }

    wasOpen() {
      try {
        return sessionStorage.getItem(this.openKey) === "1";
      } catch (_) {
        return false;
      }
    }

    // --- brand and state -------------------------------------------------------------------------

    _applyBrand(brand) {
      const theme = brand.theme || {};
      const style = this.host.style;
      if (parseHex(theme.primary_color)) {
        style.setProperty("--bc-primary", theme.primary_color);
        style.setProperty("--bc-on-primary", readableOn(theme.primary_color));
      }
      if (parseHex(theme.accent_color)) {
        style.setProperty("--bc-accent", theme.accent_color);
        style.setProperty("--bc-on-accent", readableOn(theme.accent_color));
      }
      this.persona = brand.persona_name || brand.name || "our assistant";
      this.el.title.textContent = brand.persona_name || brand.name || "Chat";
      this.el.brandName.textContent = brand.persona_name ? brand.name : "";
      this.el.avatar.textContent = (this.persona || "?").trim().charAt(0).toUpperCase();
      this.el.panel.setAttribute("aria-label", "Chat with " + this.persona + (brand.name ? " of " + brand.name : ""));
      this.el.panel.removeAttribute("aria-labelledby");
      this.el.label.textContent = "Message " + this.persona;
      this.el.input.placeholder = "Message " + this.persona + "…";
      if (!this.isOpen) this.el.launcher.setAttribute("aria-label", "Open chat with " + this.persona);
      this.el.demo.hidden = brand.provider !== "offline";
      const intro = this.shadow.querySelector(".intro .text");
      if (intro) intro.textContent = "Hi, I'm " + this.persona + (brand.name ? " from " + brand.name : "") + ". How can I help?";
    }

    _onState(state) {
      this.el.root.dataset.state = state;
      this.el.status.textContent = STATUS_TEXT[state] || "";
      for (const el of this.users.values()) {
        if (el.classList.contains("queued")) this._setMeta(el, this._pendingText());
      }
    }

    _pendingText() {
      const state = this.chat ? this.chat.state : "idle";
      return state === "offline" ? "Queued — will send when you're back online" : "Sending…";
    }

    // --- messages --------------------------------------------------------------------------------

    _intro() {
      const el = this._message("bot", "Hi! How can I help?");
      el.classList.add("intro");
      this.el.history.appendChild(el);
      if (this.cfg.suggestions.length) {
        const chips = document.createElement("div");
        chips.className = "chips";
        for (const text of this.cfg.suggestions) {
          const chip = document.createElement("button");
          chip.type = "button";
          chip.className = "chip";
          chip.textContent = text;
          chip.addEventListener("click", () => this._submit(text));
          chips.appendChild(chip);
        }
        this.el.history.appendChild(chips);
      }
    }

    _message(role, text) {
      const el = document.createElement("div");
      el.className = "msg " + role;
      const bubble = document.createElement("div");
      bubble.className = "bubble";
      const who = document.createElement("span");
      who.className = "sr-only";
      who.textContent = role === "user" ? "You: " : this.persona + ": ";
      const body = document.createElement("span");
      body.className = "text";
      body.textContent = text || "";
      bubble.append(who, body);
      el.appendChild(bubble);
      return el;
    }

    _setMeta(el, text) {
      let meta = el.querySelector(".meta");
      if (!text) {
        if (meta) meta.remove();
        return;
      }
      if (!meta) {
        meta = document.createElement("div");
        meta.className = "meta";
        el.appendChild(meta);
      }
      meta.textContent = text;
    }

    _onQueued({ client_message_id, text }) {
      if (this.users.has(client_message_id)) return;
      const el = this._message("user", text);
      el.dataset.cmid = client_message_id;
      el.classList.add("queued");
      this._setMeta(el, this._pendingText());
      this.users.set(client_message_id, el);
      this.el.live.appendChild(el);
      this._scrollToEnd(true);
    }

    /** The server asked us to wait (rate_limited, conversation_busy): the client sends it again. */
    _onDelayed({ client_message_id, code, retry_in_ms }) {
      const el = this.users.get(client_message_id);
      if (!el) return;
      el.classList.add("queued");
      const seconds = Math.max(1, Math.ceil((retry_in_ms || 0) / 1000));
      if (code === "conversation_busy") {
        this._setMeta(el, "Waiting for the current reply to finish…");
      } else if (code === "buffer_unavailable") {
        this._setMeta(el, "The chat is having trouble — sending again in " + seconds + " s");
      } else {
        this._setMeta(el, "Too many messages right now — sending again in " + seconds + " s");
      }
    }

    _onAccepted({ client_message_id, stream_id }) {
      const user = this.users.get(client_message_id);
      if (user) {
        user.classList.remove("queued");
        this._setMeta(user, "");
      }
      this._bot(stream_id, client_message_id);
    }

    _bot(streamId, clientMessageId) {
      let el = this.bots.get(streamId);
      if (el) return el;
      el = this._message("bot", "");
      el.dataset.stream = streamId;
      const bubble = el.querySelector(".bubble");
      bubble.setAttribute("aria-busy", "true");
      bubble.querySelector(".text").innerHTML = '<span class="typing" aria-label="typing"><i></i><i></i><i></i></span>';
      this.bots.set(streamId, el);
      this.streaming.add(streamId);
      this._updateStop();
      const user = clientMessageId && this.users.get(clientMessageId);
      if (user && user.parentNode) user.after(el);
      else this.el.live.appendChild(el);
      this._scrollToEnd(false);
      return el;
    }

    _setText(streamId, text, clientMessageId) {
      const el = this._bot(streamId, clientMessageId);
      const body = el.querySelector(".text");
      const stick = this._nearEnd();
      body.textContent = text;
      body.classList.toggle("cursor", this.streaming.has(streamId));
      if (stick) this._scrollToEnd(true);
    }

    _finish(streamId) {
      const el = this.bots.get(streamId);
      this.streaming.delete(streamId);
      this._updateStop();
      if (!el) return null;
      el.querySelector(".bubble").setAttribute("aria-busy", "false");
      el.querySelector(".text").classList.remove("cursor");
      return el;
    }

    _onDone(e) {
      this._setText(e.stream_id, e.text, e.client_message_id);
      const el = this._finish(e.stream_id);
      if (!el) return;
      el.dataset.status = "done";
      if (e.finish_reason === "cancelled") this._setMeta(el, "Stopped");
      else if (e.finish_reason === "length") this._setMeta(el, "Reply cut short");
      if (!e.text && e.finish_reason === "cancelled") el.querySelector(".text").textContent = "…";
    }

    _onError(e) {
      if (e.stream_id) {
        const el = this._bot(e.stream_id, e.client_message_id);
        this._finish(e.stream_id);
        el.classList.add("failed");
        el.dataset.status = "error";
        const body = el.querySelector(".text");
        if (!body.textContent || body.querySelector(".typing")) {
          body.textContent =
            e.code === "stream_expired"
              ? "This reply is no longer available."
              : "Sorry — I couldn't finish this reply. Please ask again.";
        } else {
          this._setMeta(el, "Reply interrupted");
        }
        return;
      }
      if (e.client_message_id && this.users.has(e.client_message_id)) {
        const user = this.users.get(e.client_message_id);
        user.classList.remove("queued");
        this._setMeta(user, "Not sent: " + (e.message || e.code));
        return;
      }
      if (e.fatal) this._notice("The chat is unavailable right now (" + (e.message || e.code) + ").");
    }

    _onWithdrawn({ client_message_id }) {
      const el = this.users.get(client_message_id);
      if (!el) return;
      el.classList.remove("queued");
      this._setMeta(el, "Not sent");
    }

    _onReset(e) {
      this.el.history.textContent = "";
      this.el.live.textContent = "";
      this.users.clear();
      this.bots.clear();
      this.streaming.clear();
      this._updateStop();
      if (e && e.reason === "expired") this._notice("Your earlier conversation has expired — this is a new one.");
    }

    _notice(text) {
      const p = document.createElement("p");
      p.className = "notice";
      p.textContent = text;
      this.el.live.appendChild(p);
      this._scrollToEnd(true);
    }

    _onHistory({ turns }) {
      if (!turns || !turns.length) return; // nothing to redraw: keep the intro and suggestions
      const frag = document.createDocumentFragment();
      const intro = this.shadow.querySelector(".intro");
      if (intro) frag.appendChild(intro);
      let lastUser = null;
      for (const turn of turns || []) {
        if (turn.role === "user") {
          lastUser = turn.client_message_id || null;
          if (lastUser && this.users.has(lastUser)) continue;
          const el = this._message("user", turn.text);
          if (lastUser) {
            el.dataset.cmid = lastUser;
            this.users.set(lastUser, el);
          }
          frag.appendChild(el);
        } else if (turn.role === "assistant" && turn.stream_id && !this.bots.has(turn.stream_id)) {
          const el = this._message("bot", turn.text);
          el.dataset.stream = turn.stream_id;
          el.dataset.status = turn.status;
          this.bots.set(turn.stream_id, el);
          if (turn.status === "streaming") {
            this.streaming.add(turn.stream_id);
            el.querySelector(".bubble").setAttribute("aria-busy", "true");
            el.querySelector(".text").classList.add("cursor");
          } else if (turn.status === "error") {
            el.classList.add("failed");
            if (!turn.text) el.querySelector(".text").textContent = "Sorry — I couldn't finish this reply.";
          }
          frag.appendChild(el);
        }
      }
      this.el.history.textContent = "";
      this.el.history.appendChild(frag);
      this._updateStop();
      this._scrollToEnd(true);
    }

    _updateStop() {
      const busy = this.streaming.size > 0;
      const hadFocus = this.shadow.activeElement === this.el.stop;
      this.el.stop.hidden = !busy;
      if (!busy && hadFocus) this.el.input.focus();
    }

    _nearEnd() {
      const log = this.el.log;
      return log.scrollHeight - log.scrollTop - log.clientHeight < 60;
    }

    _scrollToEnd(force) {
      if (!force && !this._nearEnd()) return;
      const log = this.el.log;
      log.scrollTop = log.scrollHeight;
    }
  }

  function start() {
    const widget = new Widget(config);
    document.body.appendChild(widget.host);
    window.BrandChatWidget = widget;
    // The command queue: calls made through the stub before this file loaded run now, in order;
    // from here on `brandchat(...)` runs at once.
    const queued = (typeof window.brandchat === "function" && window.brandchat.q) || [];
    window.brandchat = (name, ...args) => widget.command(name, ...args);
    for (const call of Array.from(queued)) {
      try {
        widget.command(...Array.from(call));
      } catch (err) {
        console.error("brandchat: a queued command failed", err);
      }
    }
    loadClient()
      .then((BrandChat) => {
        const chat = new BrandChat.ChatClient(Object.assign({}, config.options, { server: config.server, brand: config.brand }));
        widget.attach(chat);
        // Before anything happens, so a host page (or a test) can listen to every event.
        window.dispatchEvent(new CustomEvent("brandchat:ready", { detail: widget }));
        // A tab that already talked reconnects at once (and resumes a reply still streaming);
        // otherwise only the brand is fetched, and the connection opens with the panel.
        if (chat.hasConversation) chat.connect().catch(() => undefined);
        else chat.describe().catch(() => undefined);
        if (config.open || widget.wasOpen()) widget.open();
      })
      .catch((err) => {
        console.error("brandchat: the chat client could not start", err);
        widget._notice("The chat could not load. Please try again later.");
      });
  }

  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start, { once: true });
})();
