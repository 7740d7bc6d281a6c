// The browser around the client, each piece replaceable through `options.env` (tests): the globals
// it uses, storage that never throws, ids, WebSocket URLs, and reading an HTTP error body.

function uuid(env) {
  const c = (env && env.crypto) || (typeof crypto !== "undefined" ? crypto : null);
  // randomUUID exists only in secure contexts; a brand page on plain http still needs ids.
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const b = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
}

/** `http(s)://host/prefix` + `/v1/ws` → `ws(s)://host/prefix/v1/ws`. */
function wsUrl(server, path) {
  const url = new URL(server.replace(/\/+$/, "") + path);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

function memoryStorage() {
  const data = new Map();
  return {
    getItem: (k) => (data.has(k) ? data.get(k) : null),
    setItem: (k, v) => data.set(k, String(v)),
    removeItem: (k) => data.delete(k),
  };
}

/** Storage that never throws (private modes, disabled cookies, quota): falls back to memory. */
function safeStorage(get) {
  let store = null;
  try {
    store = get();
    const probe = "__brandchat_probe__";
    store.setItem(probe, "1");
    store.removeItem(probe);
  } catch (_) {
    store = null;
  }
  const backing = store || memoryStorage();
  return {
    get(key) {
      try {
        const raw = backing.getItem(key);
        return raw == null ? null : JSON.parse(raw);
      } catch (_) {
        return null;
      }
    },
    set(key, value) {
      try {
        backing.setItem(key, JSON.stringify(value));
      } catch (_) {
        /* quota or disabled storage: the client still works, it just forgets on reload */
      }
    },
    remove(key) {
      try {
        backing.removeItem(key);
      } catch (_) {
        /* as above */
      }
    },
  };
}

function defaultEnv() {
  const g = typeof globalThis !== "undefined" ? globalThis : {};
  return {
    WebSocket: g.WebSocket,
    EventSource: g.EventSource,
    fetch: g.fetch ? g.fetch.bind(g) : undefined,
    window: typeof window !== "undefined" ? window : null,
    document: typeof document !== "undefined" ? document : null,
    navigator: typeof navigator !== "undefined" ? navigator : null,
    crypto: g.crypto,
    setTimeout: g.setTimeout.bind(g),
    clearTimeout: g.clearTimeout.bind(g),
    setInterval: g.setInterval.bind(g),
    clearInterval: g.clearInterval.bind(g),
    now: () => Date.now(),
    random: Math.random,
    location: typeof location !== "undefined" ? location : null,
  };
}

async function readError(res) {
  // How long to wait (429): the body's retry_after_ms, else the Retry-After header (seconds).
  const header = res.headers && typeof res.headers.get === "function" ? Number(res.headers.get("retry-after")) : NaN;
  const retryAfterMs = header > 0 ? header * 1000 : undefined;
  try {
    const body = await res.json();
    if (body && body.error) {
      return {
        code: body.error.code || "http_" + res.status,
        message: body.error.message,
        retry_after_ms: Number(body.error.retry_after_ms) || retryAfterMs,
      };
    }
  } catch (_) {
    /* not JSON */
  }
  return { code: "http_" + res.status, message: "HTTP " + res.status, retry_after_ms: retryAfterMs };
}
