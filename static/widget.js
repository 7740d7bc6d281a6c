/*!
 * brandchat widget — the embed. One tag on a brand's page:
 *
 *   <script src="https://chat.example.com/static/widget.js" data-brand="demo" defer></script>
 *
 * Attributes: data-brand (brand id), data-server (chat server; default: where this file came
 * from), data-open="true" (start open), data-suggestions="Question one|Question two",
 * data-options='{"connectTimeoutMs": 4000}' (any ChatClient DEFAULTS key), data-position="left"
 * (default right), data-launcher-text="Chat with us" (a labelled launcher instead of the round one),
 * data-locale="es" (the widget's own words: en, es, fr, de; default: the browser's language).
 *
 * JS API: `brandchat(command, ...args)`, with a queue that works before this file loads (paste the
 * one-line stub of docs/client.md above the tag): open, close, toggle, showLauncher, hideLauncher,
 * identify({user_id, user_hash, name?, email?}) (a signed-in user; user_hash from the brand's
 * backend), logout, update({locale}), on(event, fn) / off(event, fn) for the events open, close,
 * message, state, identified and error.
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
  const CLIENT_VERSION = "60651cd73ff1cd8f";
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
    locale: data.locale || (navigator.languages && navigator.languages[0]) || navigator.language || "en",
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

  // --- the widget's own words, per locale (data-locale, brandchat("update", {locale})) -------------
  // {persona}, {brand}, {s}, {why} are filled in; a missing key falls back to English.

  const STRINGS = {
    en: {
      chat: "Chat", openChat: "Open chat", openChatWith: "Open chat with {persona}", closeChat: "Close chat",
      chatWith: "Chat with {persona}", chatWithOf: "Chat with {persona} of {brand}", conversation: "Conversation",
      demoNote: "Offline demo — answers come from the brand's FAQ, not an AI model",
      yourMessage: "Your message", messageTo: "Message {persona}", placeholder: "Type your question…",
      placeholderTo: "Message {persona}…", send: "Send message", stop: "Stop the reply", typing: "typing", you: "You",
      intro: "Hi! How can I help?", introAs: "Hi, I'm {persona}. How can I help?",
      introAsFrom: "Hi, I'm {persona} from {brand}. How can I help?", assistant: "our assistant",
      idle: "", connecting: "Connecting…", connected: "Online", reconnecting: "Reconnecting…",
      offline: "You're offline — messages will be sent when you're back", closed: "Disconnected",
      queuedOffline: "Queued — will send when you're back online", sending: "Sending…",
      waitingBusy: "Waiting for the current reply to finish…",
      retryTrouble: "The chat is having trouble — sending again in {s} s",
      retryLimited: "Too many messages right now — sending again in {s} s",
      queueFull: "A few messages are still waiting to be sent — please wait a moment.",
      notSendable: "That message could not be sent.", stopped: "Stopped", cutShort: "Reply cut short",
      replyGone: "This reply is no longer available.", replyFailed: "Sorry — I couldn't finish this reply. Please ask again.",
      replyFailedShort: "Sorry — I couldn't finish this reply.", interrupted: "Reply interrupted",
      notSent: "Not sent", notSentWhy: "Not sent: {why}", unavailable: "The chat is unavailable right now ({why}).",
      identityFailed: "The chat could not confirm who you are, so it is off for now. Please reload the page.",
      expired: "Your earlier conversation has expired — this is a new one.",
      loadFailed: "The chat could not load. Please try again later.",
    },
    es: {
      chat: "Chat", openChat: "Abrir el chat", openChatWith: "Abrir el chat con {persona}", closeChat: "Cerrar el chat",
      chatWith: "Chat con {persona}", chatWithOf: "Chat con {persona} de {brand}", conversation: "Conversación",
      demoNote: "Demo sin conexión: las respuestas salen de las preguntas frecuentes de la marca, no de una IA",
      yourMessage: "Tu mensaje", messageTo: "Mensaje para {persona}", placeholder: "Escribe tu pregunta…",
      placeholderTo: "Escribe a {persona}…", send: "Enviar mensaje", stop: "Detener la respuesta", typing: "escribiendo",
      you: "Tú", intro: "¡Hola! ¿En qué puedo ayudarte?", introAs: "Hola, soy {persona}. ¿En qué puedo ayudarte?",
      introAsFrom: "Hola, soy {persona} de {brand}. ¿En qué puedo ayudarte?", assistant: "nuestro asistente",
      idle: "", connecting: "Conectando…", connected: "En línea", reconnecting: "Reconectando…",
      offline: "Sin conexión: los mensajes se enviarán cuando vuelvas", closed: "Desconectado",
      queuedOffline: "En cola: se enviará cuando vuelvas a estar en línea", sending: "Enviando…",
      waitingBusy: "Esperando a que termine la respuesta actual…",
      retryTrouble: "El chat tiene problemas: se enviará de nuevo en {s} s",
      retryLimited: "Demasiados mensajes ahora mismo: se enviará de nuevo en {s} s",
      queueFull: "Aún hay mensajes pendientes de envío; espera un momento.",
      notSendable: "No se pudo enviar ese mensaje.", stopped: "Detenida", cutShort: "Respuesta incompleta",
      replyGone: "Esta respuesta ya no está disponible.",
      replyFailed: "Lo siento, no pude terminar esta respuesta. Vuelve a preguntar.",
      replyFailedShort: "Lo siento, no pude terminar esta respuesta.", interrupted: "Respuesta interrumpida",
      notSent: "No enviado", notSentWhy: "No enviado: {why}", unavailable: "El chat no está disponible ahora ({why}).",
      identityFailed: "El chat no pudo confirmar quién eres, así que está desactivado. Recarga la página.",
      expired: "Tu conversación anterior ha caducado; esta es una nueva.",
      loadFailed: "No se pudo cargar el chat. Inténtalo más tarde.",
    },
    fr: {
      chat: "Chat", openChat: "Ouvrir le chat", openChatWith: "Ouvrir le chat avec {persona}", closeChat: "Fermer le chat",
      chatWith: "Chat avec {persona}", chatWithOf: "Chat avec {persona} de {brand}", conversation: "Conversation",
      demoNote: "Démo hors ligne : les réponses viennent de la FAQ de la marque, pas d'une IA",
      yourMessage: "Votre message", messageTo: "Message à {persona}", placeholder: "Posez votre question…",
      placeholderTo: "Écrire à {persona}…", send: "Envoyer le message", stop: "Arrêter la réponse", typing: "écrit",
      you: "Vous", intro: "Bonjour ! Comment puis-je vous aider ?",
      introAs: "Bonjour, je suis {persona}. Comment puis-je vous aider ?",
      introAsFrom: "Bonjour, je suis {persona} de {brand}. Comment puis-je vous aider ?", assistant: "notre assistant",
      idle: "", connecting: "Connexion…", connected: "En ligne", reconnecting: "Reconnexion…",
      offline: "Vous êtes hors ligne — les messages partiront à votre retour", closed: "Déconnecté",
      queuedOffline: "En attente — sera envoyé à votre retour en ligne", sending: "Envoi…",
      waitingBusy: "En attente de la fin de la réponse en cours…",
      retryTrouble: "Le chat rencontre un problème — nouvel envoi dans {s} s",
      retryLimited: "Trop de messages pour le moment — nouvel envoi dans {s} s",
      queueFull: "Quelques messages attendent encore d'être envoyés — patientez un instant.",
      notSendable: "Ce message n'a pas pu être envoyé.", stopped: "Arrêtée", cutShort: "Réponse tronquée",
      replyGone: "Cette réponse n'est plus disponible.",
      replyFailed: "Désolé — je n'ai pas pu terminer cette réponse. Posez à nouveau la question.",
      replyFailedShort: "Désolé — je n'ai pas pu terminer cette réponse.", interrupted: "Réponse interrompue",
      notSent: "Non envoyé", notSentWhy: "Non envoyé : {why}", unavailable: "Le chat est indisponible pour le moment ({why}).",
      identityFailed: "Le chat n'a pas pu confirmer votre identité ; il est désactivé. Rechargez la page.",
      expired: "Votre conversation précédente a expiré — en voici une nouvelle.",
      loadFailed: "Le chat n'a pas pu se charger. Réessayez plus tard.",
    },
    de: {
      chat: "Chat", openChat: "Chat öffnen", openChatWith: "Chat mit {persona} öffnen", closeChat: "Chat schließen",
      chatWith: "Chat mit {persona}", chatWithOf: "Chat mit {persona} von {brand}", conversation: "Unterhaltung",
      demoNote: "Offline-Demo – die Antworten stammen aus den FAQ der Marke, nicht von einer KI",
      yourMessage: "Ihre Nachricht", messageTo: "Nachricht an {persona}", placeholder: "Ihre Frage…",
      placeholderTo: "Nachricht an {persona}…", send: "Nachricht senden", stop: "Antwort stoppen", typing: "schreibt",
      you: "Sie", intro: "Hallo! Wie kann ich helfen?", introAs: "Hallo, ich bin {persona}. Wie kann ich helfen?",
      introAsFrom: "Hallo, ich bin {persona} von {brand}. Wie kann ich helfen?", assistant: "unser Assistent",
      idle: "", connecting: "Verbinde…", connected: "Online", reconnecting: "Verbinde erneut…",
      offline: "Sie sind offline – Nachrichten werden gesendet, sobald Sie zurück sind", closed: "Getrennt",
      queuedOffline: "Wartet – wird gesendet, sobald Sie wieder online sind", sending: "Wird gesendet…",
      waitingBusy: "Wartet, bis die aktuelle Antwort fertig ist…",
      retryTrouble: "Der Chat hat Probleme – neuer Versuch in {s} s",
      retryLimited: "Gerade zu viele Nachrichten – neuer Versuch in {s} s",
      queueFull: "Einige Nachrichten warten noch auf den Versand – bitte einen Moment Geduld.",
      notSendable: "Diese Nachricht konnte nicht gesendet werden.", stopped: "Gestoppt", cutShort: "Antwort gekürzt",
      replyGone: "Diese Antwort ist nicht mehr verfügbar.",
      replyFailed: "Entschuldigung – ich konnte diese Antwort nicht beenden. Bitte fragen Sie noch einmal.",
      replyFailedShort: "Entschuldigung – ich konnte diese Antwort nicht beenden.", interrupted: "Antwort unterbrochen",
      notSent: "Nicht gesendet", notSentWhy: "Nicht gesendet: {why}",
      unavailable: "Der Chat ist gerade nicht verfügbar ({why}).",
      identityFailed: "Der Chat konnte nicht bestätigen, wer Sie sind, und ist deshalb aus. Bitte laden Sie die Seite neu.",
      expired: "Ihre frühere Unterhaltung ist abgelaufen – dies ist eine neue.",
      loadFailed: "Der Chat konnte nicht geladen werden. Bitte später erneut versuchen.",
    },
  };

  /** The table for a BCP 47 tag ("es-MX" → es); anything else is English. */
  function stringsFor(locale) {
    const primary = String(locale || "").trim().toLowerCase().split(/[-_]/)[0];
    return Object.prototype.hasOwnProperty.call(STRINGS, primary) ? primary : "en";
  }

  function fill(text, vars) {
    return String(text).replace(/\{(\w+)\}/g, (m, key) => (vars && vars[key] != null ? String(vars[key]) : m));
  }

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
      this.brandInfo = null;
      this.identity = null; // identify() before the client is loaded: handed over in attach()
      this.setLocale(cfg.locale);
      this.listeners = {
        open: new Set(),
        close: new Set(),
        message: new Set(),
        state: new Set(),
        identified: new Set(),
        error: new Set(),
      };
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
      this.el.launcher.setAttribute("aria-label", this.t("closeChat"));
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
      this.el.launcher.setAttribute("aria-label", this.t("openChatWith"));
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

    /**
     * A signed-in user: `{user_id, user_hash, name?, email?}`, user_hash computed by the brand's
     * backend (docs/client.md, "Signed-in users"). Before the client loads it waits; after, the
     * conversation is bound to the user at once. A hash the server refuses is an `error` event
     * (code identity_invalid) and a console error: the chat never goes on as someone unverified.
     */
    identify(identity) {
      if (!identity || (identity.user_id == null && identity.id == null)) {
        this._fail({ code: "identity_invalid", message: "identify needs {user_id, user_hash}" });
        return undefined;
      }
      this.identity = identity;
      if (!this.chat) return undefined;
      const chat = this.chat;
      chat
        .identify(identity)
        .then(() => {
          // After an earlier refusal the client stopped: an open panel connects again.
          if (this.isOpen && (chat.state === "closed" || chat.state === "idle")) chat.connect().catch(() => undefined);
        })
        .catch(() => undefined); // the client emitted the error (→ _onError → _fail)
      return undefined;
    }

    /** The user signed out: forget them and this tab's conversation. */
    logout() {
      this.identity = null;
      if (this.chat) this.chat.logout();
    }

    /** `update({locale})`: settings that may change while the page runs. */
    update(settings) {
      if (settings && settings.locale) this.setLocale(settings.locale);
    }

    /** The widget's words (en, es, fr, de; others fall back to English) and negotiate's locale hint. */
    setLocale(locale) {
      this.locale = String(locale || "en").trim();
      this.strings = STRINGS[stringsFor(this.locale)];
      this.el.root.lang = stringsFor(this.locale);
      this._applyStrings();
      if (this.chat) this.chat.setLocale(this.locale);
    }

    /** One of the widget's words in its locale, with {persona} and {brand} (and `vars`) filled in. */
    t(key, vars) {
      const text = this.strings[key] != null ? this.strings[key] : STRINGS.en[key];
      const brand = this.brandInfo || {};
      return fill(text, Object.assign({ persona: this.persona, brand: brand.name || "" }, vars));
    }

    get persona() {
      const brand = this.brandInfo;
      return (brand && (brand.persona_name || brand.name)) || this.t0("assistant");
    }

    t0(key) {
      return this.strings[key] != null ? this.strings[key] : STRINGS.en[key];
    }

    /** `brandchat(command, ...args)`: the page's way in, before and after this file loads. */
    command(name, ...args) {
      const commands = [
        "open",
        "close",
        "toggle",
        "showLauncher",
        "hideLauncher",
        "identify",
        "logout",
        "update",
        "on",
        "off",
      ];
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
      if (this.identity) {
        try {
          chat.identify(this.identity).catch(() => undefined); // sent with the first negotiate
        } catch (err) {
          this._fail({ code: "identity_invalid", message: err.message });
        }
      }
      chat.on("identified", (user) => this._emitApi("identified", { id: user.id, name: user.name }));
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
            ? this.t("queueFull")
            : (err && err.message) || this.t("notSendable")
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
      this.brandInfo = brand;
      this.el.avatar.textContent = (this.persona || "?").trim().charAt(0).toUpperCase();
      this.el.panel.removeAttribute("aria-labelledby");
      this.el.demo.hidden = brand.provider !== "offline";
      this._applyStrings();
    }

    /** Every word the widget draws, in its locale (after a brand or a locale change). */
    _applyStrings() {
      const el = this.el;
      const brand = this.brandInfo;
      el.title.textContent = brand ? brand.persona_name || brand.name || this.t("chat") : this.t("chat");
      el.brandName.textContent = brand && brand.persona_name ? brand.name : "";
      el.close.setAttribute("aria-label", this.t("closeChat"));
      el.demo.textContent = this.t("demoNote");
      el.log.setAttribute("aria-label", this.t("conversation"));
      el.send.setAttribute("aria-label", this.t("send"));
      el.stop.setAttribute("aria-label", this.t("stop"));
      el.label.textContent = brand ? this.t("messageTo") : this.t("yourMessage");
      el.input.placeholder = brand ? this.t("placeholderTo") : this.t("placeholder");
      if (brand) el.panel.setAttribute("aria-label", brand.name ? this.t("chatWithOf") : this.t("chatWith"));
      el.launcher.setAttribute(
        "aria-label",
        this.isOpen ? this.t("closeChat") : brand ? this.t("openChatWith") : this.t("openChat")
      );
      const intro = this.shadow.querySelector(".intro .text");
      if (intro) intro.textContent = !brand ? this.t("intro") : brand.name ? this.t("introAsFrom") : this.t("introAs");
      for (const who of this.shadow.querySelectorAll(".msg .bubble > .sr-only")) {
        who.textContent = (who.closest(".msg.user") ? this.t("you") : this.persona) + ": ";
      }
      if (this.chat) this._onState(this.chat.state);
    }

    /** A failure the page must see: the widget's `error` event and the console (identity_invalid…). */
    _fail(e) {
      console.error("brandchat: " + e.code + ": " + e.message);
      this._emitApi("error", { code: e.code, message: e.message });
      this._notice(e.code === "identity_invalid" ? this.t("identityFailed") : this.t("unavailable", { why: e.message || e.code }));
    }

    _onState(state) {
      this.el.root.dataset.state = state;
      this.el.status.textContent = this.t0(state) || "";
      for (const el of this.users.values()) {
        if (el.classList.contains("queued")) this._setMeta(el, this._pendingText());
      }
    }

    _pendingText() {
      const state = this.chat ? this.chat.state : "idle";
      return state === "offline" ? this.t("queuedOffline") : this.t("sending");
    }

    // --- messages --------------------------------------------------------------------------------

    _intro() {
      const el = this._message("bot", this.t("intro"));
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
      who.textContent = (role === "user" ? this.t("you") : this.persona) + ": ";
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
        this._setMeta(el, this.t("waitingBusy"));
      } else if (code === "buffer_unavailable") {
        this._setMeta(el, this.t("retryTrouble", { s: seconds }));
      } else {
        this._setMeta(el, this.t("retryLimited", { s: seconds }));
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
      const typing = document.createElement("span");
      typing.className = "typing";
      typing.setAttribute("aria-label", this.t("typing"));
      typing.innerHTML = "<i></i><i></i><i></i>";
      bubble.querySelector(".text").replaceChildren(typing);
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
      if (e.finish_reason === "cancelled") this._setMeta(el, this.t("stopped"));
      else if (e.finish_reason === "length") this._setMeta(el, this.t("cutShort"));
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
          body.textContent = e.code === "stream_expired" ? this.t("replyGone") : this.t("replyFailed");
        } else {
          this._setMeta(el, this.t("interrupted"));
        }
        return;
      }
      if (e.client_message_id && this.users.has(e.client_message_id)) {
        const user = this.users.get(e.client_message_id);
        user.classList.remove("queued");
        this._setMeta(user, this.t("notSentWhy", { why: e.message || e.code }));
        return;
      }
      if (e.fatal) this._fail(e);
    }

    _onWithdrawn({ client_message_id }) {
      const el = this.users.get(client_message_id);
      if (!el) return;
      el.classList.remove("queued");
      this._setMeta(el, this.t("notSent"));
    }

    _onReset(e) {
      this.el.history.textContent = "";
      this.el.live.textContent = "";
      this.users.clear();
      this.bots.clear();
      this.streaming.clear();
      this._updateStop();
      if (e && (e.reason === "identity" || e.reason === "logout")) this._intro(); // another person: start afresh
      if (e && e.reason === "expired") this._notice(this.t("expired"));
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
            if (!turn.text) el.querySelector(".text").textContent = this.t("replyFailedShort");
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
        const chat = new BrandChat.ChatClient(
          Object.assign({}, config.options, { server: config.server, brand: config.brand, locale: widget.locale })
        );
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
        widget._notice(widget.t("loadFailed"));
      });
  }

  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start, { once: true });
})();
