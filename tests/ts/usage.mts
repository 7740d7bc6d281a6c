// How an app uses the npm package, checked by `tsc --noEmit` (make typecheck-client): every line
// must type-check against static/chat-client.d.ts, and the @ts-expect-error lines must not.
import BrandChat, {
  Backoff,
  ChatClient,
  CLOSE_CODES,
  DEFAULTS,
  ReplyState,
  closeAction,
  nextState,
  type ChatClientEvents,
  type ConnectionState,
} from "@brandchat/client";

const chat = new ChatClient({ server: "https://chat.example.com", brand: "demo", connectTimeoutMs: 4000 });
const unsubscribe: () => void = chat.on("delta", (e) => {
  const whole: string = e.text;
  const piece: string = e.delta;
  const seq: number = e.seq;
  console.log(whole, piece, seq, e.stream_id);
});
chat.on("done", (e) => console.log(e.finish_reason === "fallback", e.text));
chat.on("state", ({ newState, oldState }) => console.log(newState satisfies ConnectionState, oldState));
chat.on("error", (e: ChatClientEvents["error"]) => console.log(e.code, e.retryable === true));
unsubscribe();

async function talk(): Promise<string> {
  await chat.connect();
  const brand = await chat.describe();
  const id: string = chat.send(`Hi from ${brand.persona_name}`);
  const cancelled: boolean = chat.cancel();
  console.log(cancelled, chat.state, chat.transportName, chat.conversationId, chat.hasConversation);
  chat.close();
  return id;
}
void talk();

const backoff = new Backoff({ baseMs: 100, maxMs: 1000 });
const delay: number = backoff.next();
const reply = new ReplyState("s_1", "m_1");
const outcome: "applied" | "duplicate" | "gap" | "finished" = reply.apply({ type: "delta", seq: 1, text: "hi" });
const next: ConnectionState = nextState("idle", "connect");
const action = closeAction(1012);
console.log(delay, outcome, next, action.reconnect, CLOSE_CODES[4401], DEFAULTS.maxMessageChars, BrandChat.version);

// Signed-in users and the locale hint (docs/client.md, "Signed-in users").
const signedIn = new ChatClient({ brand: "demo", locale: "es", identity: { user_id: "u_42", user_hash: "ab12" } });
signedIn.on("identified", (u) => console.log(u.id, u.name ?? "anonymous", u.conversation_id));
void signedIn.identify({ user_id: "u_42", user_hash: "ab12", name: "Ann" }).then((u) => console.log(u?.id));
const locale: string | null = signedIn.setLocale("fr");
console.log(locale, signedIn.user?.name, signedIn.locale);
signedIn.logout();
// @ts-expect-error: an identity without the backend's hash is not one
void signedIn.identify({ user_id: "u_42" });

// @ts-expect-error: not an event the client emits
chat.on("nonsense", () => undefined);
// @ts-expect-error: send takes the text, not an object
chat.send({ text: "hi" });
// @ts-expect-error: options are typed
new ChatClient({ connectTimeoutMs: "soon" });
