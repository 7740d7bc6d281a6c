// The Vercel AI SDK's default OpenAI provider (`openai("demo")`, which calls the Responses API)
// against a running brandchat server: node ai_sdk_check.mjs <base URL> <brand API key>.
// Prints one JSON line for tests/test_ai_sdk.py.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, streamText, tool } from "ai";

const [baseUrl, apiKey] = process.argv.slice(2);
const openai = createOpenAI({ apiKey, baseURL: `${baseUrl}/v1` });

const plain = await generateText({ model: openai("demo"), prompt: "How long does shipping take?" });

const streamed = streamText({
  model: openai("demo"),
  messages: [
    { role: "user", content: "Hi, my name is Priya." },
    { role: "assistant", content: "Hey there!" },
    { role: "user", content: "What's my name?" },
  ],
});
const pieces = [];
for await (const piece of streamed.textStream) pieces.push(piece);

let toolsStatus = null;
try {
  await generateText({
    model: openai("demo"),
    prompt: "Look it up",
    tools: { lookup: tool({ description: "look up", inputSchema: jsonSchema({ type: "object", properties: {} }) }) },
  });
} catch (err) {
  toolsStatus = err.statusCode ?? String(err);
}

console.log(
  JSON.stringify({
    plain: { text: plain.text, finishReason: plain.finishReason, outputTokens: plain.usage.outputTokens },
    streamed: { pieces: pieces.length, text: pieces.join(""), finishReason: await streamed.finishReason },
    toolsStatus,
  }),
);
