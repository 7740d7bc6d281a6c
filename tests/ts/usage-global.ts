// The classic-script build: `<script src=".../chat-client.js">` sets window.BrandChat.
import type {} from "@brandchat/client/global";

const client = new window.BrandChat.ChatClient({ brand: "demo" });
client.on("accepted", (e) => console.log(e.client_message_id, e.stream_id));
