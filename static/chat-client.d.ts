// Type declarations for the brandchat browser client (chat-client.js / chat-client.mjs), written by
// hand from static/src/ and docs/client.md. `make test` checks them with `tsc --noEmit` against
// static/types-check.ts, and tests/test_client_package.py checks they name exactly the exports.

/** Connection states (docs/client.md, "The state machine"). */
export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "offline" | "closed";
/** Events that move the state machine. */
export type StateEvent = "connect" | "opened" | "failed" | "lost" | "offline" | "online" | "close";
export type TransportName = "websocket" | "sse";
export type FinishReason = "stop" | "length" | "cancelled" | "fallback";

/** Every knob of the client, with its default in {@link DEFAULTS}. */
export interface ChatClientDefaults {
  /** Base URL of the chat server; "" means this page's origin. */
  server: string;
  brand: string;
  connectTimeoutMs: number;
  requestTimeoutMs: number;
  heartbeatMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  backoffResetAfterMs: number;
  immediateRetryGapMs: number;
  probeTimeoutMs: number;
  failedTransportTtlMs: number;
  maxQueuedMessages: number;
  busyRetryMs: number;
  rateLimitedRetryMs: number;
  maxMessageChars: number;
  maxReplies: number;
  transports: TransportName[];
  storagePrefix: string;
  /** A BCP 47 tag ("es", "pt-BR") negotiate carries as a hint; null: none. */
  locale: string | null;
}

/** Who is signed in, as the page passes it to {@link ChatClient.identify} (docs/client.md, "Signed-in users"). */
export interface Identity {
  user_id: string;
  /** hex HMAC-SHA256 of `user_id` under the brand's identity secret, computed by the brand's backend. */
  user_hash: string;
  name?: string;
  email?: string;
}

/** The user the server verified (negotiate's and the history's `user`). */
export interface VerifiedUser {
  id: string;
  name: string | null;
}

/** A Storage-like object (`sessionStorage`, `localStorage`, or your own). */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** Globals the client uses; pass some in `options.env` to replace them (tests, non-browser hosts). */
export interface ClientEnv {
  WebSocket?: unknown;
  EventSource?: unknown;
  fetch?: (input: string, init?: unknown) => Promise<unknown>;
  window?: unknown;
  document?: unknown;
  navigator?: unknown;
  crypto?: unknown;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (handle: unknown) => void;
  setInterval?: (fn: () => void, ms: number) => unknown;
  clearInterval?: (handle: unknown) => void;
  now?: () => number;
  random?: () => number;
  location?: { origin: string } | null;
}

/** What a transport factory is handed (docs/client.md, "Transports"). */
export interface TransportContext {
  env: ClientEnv;
  url: string;
  token: string;
  connectTimeoutMs: number;
  [key: string]: unknown;
}

/** The transport interface (centrifuge-js style): `name`, `supported`, `open`, `send`, `close`. */
export interface Transport {
  readonly name: string;
  open(): Promise<unknown>;
  send(frame: Record<string, unknown>): unknown;
  close(): void;
  watchable(): boolean;
}

export interface TransportFactory {
  new (ctx: TransportContext): Transport;
  supported(env: ClientEnv): boolean;
}

export interface ChatClientOptions extends Partial<ChatClientDefaults> {
  /** Where the conversation is kept across reloads (default `sessionStorage` / `localStorage`, memory when blocked). */
  storage?: StorageLike | { session?: StorageLike; local?: StorageLike };
  env?: ClientEnv;
  transportFactories?: Record<string, TransportFactory>;
  /** A signed-in user from the start (the same as calling `identify` before `connect`). */
  identity?: Identity;
}

/** negotiate's `brand`. */
export interface BrandInfo {
  id: string;
  name: string;
  persona_name: string;
  theme: Record<string, string>;
  provider: string;
}

interface StreamFields {
  stream_id: string;
  client_message_id: string | null;
  seq: number;
}

export interface HistoryTurn {
  role: "user" | "assistant";
  text: string;
  client_message_id?: string;
  stream_id?: string;
  status?: "streaming" | "done" | "error" | null;
  [key: string]: unknown;
}

/** The detail of each event of {@link ChatClient.on}. */
export interface ChatClientEvents {
  state: { newState: ConnectionState; oldState: ConnectionState };
  brand: BrandInfo;
  transport: { name: TransportName | string };
  transport_failed: { transport: string; reason: string };
  downgrade: { failed: string; until: number };
  disconnect: { transport: string; code: number | string };
  queued: { client_message_id: string; text: string; state: ConnectionState; restored?: boolean };
  accepted: { client_message_id: string; stream_id: string };
  delayed: { client_message_id: string; code: string; message: string; retry_in_ms: number | null };
  start: StreamFields;
  delta: StreamFields & { delta: string; text: string };
  retract: StreamFields & { reason: string; text: string };
  done: StreamFields & { finish_reason: FinishReason; text: string };
  error: Partial<StreamFields> & {
    code: string;
    message: string;
    retryable?: boolean;
    terminal?: boolean;
    fatal?: boolean;
  };
  history: { conversation_id: string; turns: HistoryTurn[] };
  withdrawn: { client_message_id: string; text: string };
  /** `reset`, `expired`, `identity` (another user identified), `logout`. */
  reset: { reason: string };
  /** negotiate verified a (new) signed-in user. */
  identified: { id: string; name: string | null; conversation_id: string };
}

export type ChatClientEventName = keyof ChatClientEvents;

/** The protocol client: negotiate, WebSocket or SSE, reconnect, resume, dedupe, the outgoing queue. */
export declare class ChatClient {
  constructor(options?: ChatClientOptions);
  readonly options: ChatClientDefaults;
  readonly server: string;
  readonly state: ConnectionState;
  readonly brand: BrandInfo | null;
  readonly conversationId: string | null;
  readonly transportName: TransportName | null;
  readonly hasConversation: boolean;
  /** The user the server verified for this conversation, or null (anonymous). */
  readonly user: VerifiedUser | null;
  /** The locale hint negotiate carries, or null. */
  readonly locale: string | null;
  /** Negotiate, load the history if this tab had a conversation, open the best transport. */
  connect(): Promise<void>;
  /** Negotiate only: the brand (the launcher's colours). */
  describe(): Promise<BrandInfo>;
  /** Queue a message; returns its `client_message_id`. Throws `RangeError` (empty, too long) or `queue_full`. */
  send(text: string): string;
  /** Stop the newest streaming reply (or `streamId`); returns whether it did something. */
  cancel(streamId?: string): boolean;
  /** Forget this tab's conversation and start a new one. */
  reset(): void;
  /** Say who is signed in; resolves to the verified user, rejects (code `identity_invalid`) when the hash is refused. */
  identify(identity: Identity): Promise<VerifiedUser | null>;
  /** Signed out: forget the identity and this tab's conversation. */
  logout(): void;
  /** Set the locale hint (an invalid tag is ignored); returns the one in use. */
  setLocale(locale: string): string | null;
  /** Stop for good: no reconnects. */
  close(): void;
  /** Listen to an event; returns the function that unsubscribes. */
  on<K extends ChatClientEventName>(name: K, fn: (detail: ChatClientEvents[K]) => void): () => void;
  off<K extends ChatClientEventName>(name: K, fn: (detail: ChatClientEvents[K]) => void): void;
}

export declare const DEFAULTS: Readonly<ChatClientDefaults>;
export declare const STATES: readonly ConnectionState[];
export declare const STATE_TABLE: Readonly<Record<ConnectionState, Partial<Record<StateEvent, ConnectionState>>>>;
export declare const DOWNGRADE_REASONS: readonly string[];
/** WebSocket close codes by name (the server's table is streaming/codes.py). */
export declare const CLOSE_CODES: Readonly<Record<number, string>>;
/** Error codes that end a stream for good. */
export declare const ENDS_STREAM: readonly string[];
/** Refusals of a send that keep the message queued and send it again. */
export declare const SEND_AGAIN: readonly string[];
/** The protocol version this client speaks. */
export declare const version: string;

export declare function nextState(state: ConnectionState, event: StateEvent | string): ConnectionState;
/** Full jitter: a uniform pick in [0, min(max, base * 2^attempt)). */
export declare function backoffDelay(attempt: number, baseMs: number, maxMs: number, random?: () => number): number;
export declare function closeAction(code: number | string): {
  reconnect: "now" | "backoff";
  renegotiate: boolean;
};
export declare function orderTransports(
  offered: Array<string | { transport: string; url?: string }>,
  allowed: readonly string[],
  supported: (name: string) => boolean,
  failures: Record<string, number> | null | undefined,
  now: number,
): string[];
export declare function activeFailures(failures: Record<string, number> | null | undefined, now: number): string[];
export declare function uuid(env?: ClientEnv): string;
/** `http(s)://host/prefix` + `/v1/ws` → `ws(s)://host/prefix/v1/ws`. */
export declare function wsUrl(server: string, path: string): string;

export declare class Backoff {
  constructor(opts?: { baseMs?: number; maxMs?: number; resetAfterMs?: number; random?: () => number });
  attempt: number;
  next(): number;
  connected(now: number): void;
  disconnected(now: number): void;
}

export declare class Watchdog {
  constructor(heartbeatMs?: number);
  heartbeatMs: number;
  reset(now: number, heartbeatMs?: number): void;
  touch(now: number): void;
  probe(now: number, timeoutMs: number): void;
  check(now: number): "ok" | "ping" | "dead";
}

/** One assistant reply rebuilt from its numbered events. */
export declare class ReplyState {
  constructor(streamId: string, clientMessageId?: string | null);
  stream_id: string;
  client_message_id: string | null;
  lastSeq: number;
  text: string;
  status: "streaming" | "done" | "error";
  finish_reason: FinishReason | null;
  error: { code: string; message: string; retryable: boolean } | null;
  apply(event: { type: string; seq: number; [key: string]: unknown }): "applied" | "duplicate" | "gap" | "finished";
}

export declare const WebSocketTransport: TransportFactory;
export declare const SseTransport: TransportFactory;

/** The whole API as one object (the default export; `window.BrandChat` in the browser build). */
declare const BrandChat: {
  DEFAULTS: typeof DEFAULTS;
  STATES: typeof STATES;
  STATE_TABLE: typeof STATE_TABLE;
  DOWNGRADE_REASONS: typeof DOWNGRADE_REASONS;
  CLOSE_CODES: typeof CLOSE_CODES;
  ENDS_STREAM: typeof ENDS_STREAM;
  SEND_AGAIN: typeof SEND_AGAIN;
  nextState: typeof nextState;
  backoffDelay: typeof backoffDelay;
  Backoff: typeof Backoff;
  Watchdog: typeof Watchdog;
  ReplyState: typeof ReplyState;
  closeAction: typeof closeAction;
  orderTransports: typeof orderTransports;
  activeFailures: typeof activeFailures;
  uuid: typeof uuid;
  wsUrl: typeof wsUrl;
  WebSocketTransport: typeof WebSocketTransport;
  SseTransport: typeof SseTransport;
  ChatClient: typeof ChatClient;
  version: typeof version;
};
export default BrandChat;

declare global {
  interface Window {
    /** Set by the classic-script build (`<script src=".../chat-client.js">`). */
    BrandChat: typeof BrandChat;
  }
}
