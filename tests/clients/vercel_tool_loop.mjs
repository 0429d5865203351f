// The Vercel AI SDK (`ai` + `@ai-sdk/openai`, default settings: the Responses API, store on) running
// a tool loop against the gateway.  Usage: node vercel_tool_loop.mjs <baseURL> <model> <stream|text>
// Prints one JSON line: the final text, the number of steps, the tool inputs seen.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";

const [baseURL, model, mode] = process.argv.slice(2);
const gateway = createOpenAI({ baseURL, apiKey: "any" });
const calls = [];
const lookup = tool({
  description: "Look something up",
  inputSchema: jsonSchema({ type: "object", properties: { city: { type: "string" } }, required: ["city"] }),
  execute: async (input) => {
    calls.push(input);
    return "sunny";
  },
});
const options = { model: gateway(model), prompt: "please use lookup", tools: { lookup }, stopWhen: stepCountIs(4) };
let text, steps;
if (mode === "stream") {
  const result = streamText(options);
  text = await result.text;
  steps = (await result.steps).length;
} else {
  const result = await generateText(options);
  text = result.text;
  steps = result.steps.length;
}
console.log(JSON.stringify({ text, steps, calls }));
