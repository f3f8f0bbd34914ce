// The chat page in a real browser: Debian's chromium, driven by playwright-core (which never
// downloads a browser). Usage: node chat.mjs URL [SCREENSHOT.png]
//
// Against a server running Gemma 3 270M (-c 4096) it sends a message under the model's own
// template and sees the reply stream in; shows a reply holding code highlighted with a copy
// button, regenerates it and edits the message before it (with /completion stubbed by a fixed
// reply in llama-server's stream format); edits the templates and sees the next request use
// them; checks that settings and conversations survive a reload, renaming, switching and
// deleting conversations, a preset, that a conversation three times the context still gets
// replies under both kinds of preset, the stop and new-chat buttons, the raw completion mode,
// and that the page falls back to the templates on a server without /apply-template.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const [url, screenshot] = process.argv.slice(2);
if (!url) {
  console.error("usage: node chat.mjs URL [SCREENSHOT.png]");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "llmfile-e2e-"));
const TIMEOUT = 120_000;

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
context.setDefaultTimeout(TIMEOUT);

function step(name) {
  console.log(`e2e: ${name}`);
}

async function setField(page, selector, value) {
  await page.fill(selector, value);
  await page.dispatchEvent(selector, "change");
}

async function activePreset(page) {
  const active = page.locator("#presets button.active");
  return (await active.count()) ? active.textContent() : null;
}

async function chatTitles(page) {
  return page.locator("#chat-list button.open").allTextContents();
}

// llama-server's stream: the text in pieces, then the final event with the timings.
function sse(text) {
  const pieces = text.match(/[\s\S]{1,6}/g) || [];
  const event = (data) => `data: ${JSON.stringify(data)}\n\n`;
  const timings = { prompt_n: 1, prompt_ms: 1, prompt_per_second: 1000, predicted_n: pieces.length, predicted_ms: 1, predicted_per_second: 1000 };
  return pieces.map((content) => event({ content, stop: false })).join("") +
    event({ content: "", stop: true, stopped_eos: true, timings });
}

// Answers the page's next completions with `text`, as the server would stream it.
async function stubCompletion(page, text) {
  await page.unroute("**/completion");
  await page.route("**/completion", (route) => route.fulfill({ status: 200, contentType: "text/event-stream", body: sse(text) }));
}

// Alternating turns of numbered filler, about `tokens` tokens of Gemma's in all (each word
// below is one token), in the page's stored form.
function longConversation(tokens) {
  const words = "the quick brown fox jumps over a lazy dog while birds sing".split(" ");
  const turnTokens = 200;
  return Array.from({ length: 2 * Math.ceil(tokens / turnTokens / 2) }, (_, i) => ({
    name: i % 2 === 0 ? "{{user}}" : "{{char}}",
    message: `Message ${i}: ${Array.from({ length: turnTokens }, (_, j) => words[(i + j) % words.length]).join(" ")}`,
  }));
}


try {
  const page = context.pages()[0] || (await context.newPage());
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: new URL(url).origin });
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  const completions = [];
  const applied = [];
  page.on("request", (request) => {
    if (new URL(request.url()).pathname === "/completion") {
      completions.push(JSON.parse(request.postData()));
    }
  });
  page.on("response", async (response) => {
    if (new URL(response.url()).pathname === "/apply-template") {
      const request = JSON.parse(response.request().postData());
      applied.push({ request, status: response.status(), body: response.ok() ? await response.json() : null });
    }
  });

  step("the page loads the model's defaults");
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("model-name").textContent.includes("gemma format"));
  await page.click("#settings-toggle");
  assert.equal(
    await page.inputValue("#prompt-template"),
    "<start_of_turn>system\n{{prompt}}<end_of_turn>\n{{history}}\n<start_of_turn>{{char}}\n",
  );
  assert.equal(await page.inputValue("#history-template"), "<start_of_turn>{{name}}\n{{message}}<end_of_turn>");
  assert.equal(await page.inputValue("#user"), "user");
  assert.equal(await page.inputValue("#char"), "model");
  assert.equal(await activePreset(page), "Model's template");
  // The server started with no seed says u32::MAX, its "random".
  assert.equal(await page.inputValue("#seed"), "-1");
  assert.equal(await page.getAttribute("link[rel=icon]", "href"), "/favicon.svg");
  const favicon = await page.request.get(new URL("/favicon.svg", url).href);
  assert.equal(favicon.headers()["content-type"], "image/svg+xml");
  // Short replies keep the test quick; a change event saves the setting.
  await setField(page, "#n_predict", "40");
  await setField(page, "#temperature", "0");

  step("a message gets a streamed reply, its prompt from the model's own template");
  await page.evaluate(() => {
    window.replyUpdates = 0;
    new MutationObserver(() => window.replyUpdates++).observe(document.getElementById("messages"), {
      subtree: true,
      childList: true,
      characterData: true,
    });
  });
  await page.fill("#input", "Hello! Who are you?");
  await page.click("#send");
  await page.waitForSelector(".message.bot .speed");
  const reply = await page.textContent(".message.bot");
  assert.match(reply, /tokens\/s/, "the speed is shown after the reply");
  const updates = await page.evaluate(() => window.replyUpdates);
  assert.ok(updates > 5, `the reply arrived in pieces (${updates} updates)`);
  const replyText = (await page.evaluate(() => document.querySelector(".message.bot").firstChild?.textContent || "")).trim();
  assert.ok(replyText.length > 0, "the reply has text");
  assert.ok(!/<end_of_turn>|<start_of_turn>/.test(reply), `no control tokens in ${reply}`);
  if (screenshot) {
    await page.screenshot({ path: screenshot, fullPage: true });
    step(`screenshot in ${screenshot}`);
  }

  const first = completions.at(-1);
  assert.equal(first.stream, true);
  assert.equal(first.parse_special, true);
  assert.equal(first.n_predict, 40);
  assert.equal(first.temperature, 0);
  assert.deepEqual(first.stop, []);
  const template = applied.at(-1);
  assert.deepEqual(template.request, {
    messages: [
      { role: "system", content: "You are a helpful assistant." },
      { role: "user", content: "Hello! Who are you?" },
    ],
    n_predict: 40,
  });
  assert.equal(template.status, 200, "the server answers /apply-template");
  assert.equal(template.body.dropped_turns, 0);
  assert.equal(first.prompt, template.body.prompt);
  assert.ok(first.prompt.includes("Hello! Who are you?") && first.prompt.endsWith("<start_of_turn>model\n"), first.prompt);

  step("a reply with code is highlighted and has a copy button");
  const code = "def double(x):\n    return x * 2";
  await stubCompletion(page, `Here it is:\n\n\`\`\`python\n${code}\n\`\`\`\n\nIt **doubles** x.`);
  await page.fill("#input", "Write a Python function that doubles a number.");
  await page.click("#send");
  await page.waitForFunction(() => document.querySelectorAll(".message.bot .speed").length === 2);
  const last = page.locator(".message.bot").last();
  assert.ok(await last.locator("pre code.hljs.language-python .hljs-keyword").count() > 0, "keywords are highlighted");
  assert.equal(await last.locator("strong").textContent(), "doubles");
  assert.equal(await last.locator("pre code").textContent(), code);
  await last.locator(".code button.copy").click();
  await page.waitForFunction(() => document.querySelector(".message.bot:last-of-type .copy").textContent === "Copied");
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), code);

  step("regenerate asks again for the last reply");
  const beforeRegenerate = completions.length;
  await stubCompletion(page, "```js\nconst double = (x) => 2 * x;\n```");
  await last.locator("button.regenerate").click();
  await page.waitForFunction(() => document.querySelector(".message.bot:last-of-type .hljs-keyword")?.textContent === "const");
  assert.equal(completions.length, beforeRegenerate + 1);
  assert.equal(completions.at(-1).prompt, completions.at(-2).prompt, "the same conversation is asked again");
  assert.equal(await page.locator(".message.bot").count(), 2);

  step("editing the last message asks again with the new text");
  await page.locator(".message.user").last().locator("button.edit").click();
  await page.locator(".message.user textarea").fill("Write it in Rust.");
  await page.locator(".message.user button.save").click();
  await page.waitForFunction(() => document.querySelectorAll(".message.bot .speed").length === 2 &&
    !document.querySelector(".message.user textarea"));
  assert.equal(completions.length, beforeRegenerate + 2);
  const edited = completions.at(-1).prompt;
  assert.ok(edited.includes("Write it in Rust.") && !edited.includes("doubles a number"), edited);
  assert.equal(await page.locator(".message.user .text").last().textContent(), "Write it in Rust.");
  await page.unroute("**/completion");

  step("edited templates and names are used by the next request");
  await setField(page, "#prompt-template", "CUSTOM {{prompt}}\n{{history}}\n<start_of_turn>{{char}}\n");
  await setField(page, "#history-template", "[{{name}}] {{message}}");
  await setField(page, "#user", "human");
  assert.equal(await activePreset(page), null, "editing the templates leaves the model's template");
  await page.fill("#input", "Tell me more.");
  await page.click("#send");
  await page.waitForFunction(() => document.querySelectorAll(".message.bot .speed").length === 3);
  const second = completions.at(-1);
  assert.ok(second.prompt.startsWith("CUSTOM You are a helpful assistant.\n[human] Hello! Who are you?\n[model] "), second.prompt);
  assert.ok(second.prompt.includes("\n[human] Write it in Rust.\n[model] ```js\n"), second.prompt);
  assert.ok(second.prompt.endsWith("\n[human] Tell me more.\n<start_of_turn>model\n"), second.prompt);
  assert.deepEqual(second.stop, ["[human]", "[model]"]);

  step("settings and the conversation survive a reload");
  const shown = await page.locator("#messages").innerHTML();
  await page.reload();
  await page.waitForFunction(() => document.getElementById("model-name").textContent.length > 0);
  await page.click("#settings-toggle");
  assert.equal(await page.inputValue("#history-template"), "[{{name}}] {{message}}");
  assert.equal(await page.inputValue("#user"), "human");
  assert.equal(await page.locator(".message.user").count(), 3);
  assert.equal(await page.locator(".message.bot .speed").count(), 3);
  assert.equal(await page.locator("#messages").innerHTML(), shown);
  assert.deepEqual(await chatTitles(page), ["Hello! Who are you?"]);

  step("new chat starts a second conversation; rename, switch and delete");
  await page.click("#new-chat");
  assert.equal(await page.locator(".message").count(), 0);
  await stubCompletion(page, "Sure.");
  await page.fill("#input", "A second conversation");
  await page.click("#send");
  await page.waitForSelector(".message.bot .speed");
  await page.unroute("**/completion");
  assert.deepEqual(await chatTitles(page), ["A second conversation", "Hello! Who are you?"]);
  await page.locator("#chat-list li.current button.rename").click();
  await page.fill("#chat-list li input", "Renamed chat");
  await page.press("#chat-list li input", "Enter");
  assert.deepEqual(await chatTitles(page), ["Renamed chat", "Hello! Who are you?"]);
  await page.reload();
  await page.waitForFunction(() => document.getElementById("model-name").textContent.length > 0);
  assert.deepEqual(await chatTitles(page), ["Renamed chat", "Hello! Who are you?"]);
  assert.equal(await page.textContent(".message.user .text"), "A second conversation");
  await page.click("#chat-list button.open:text-is('Hello! Who are you?')");
  assert.equal(await page.textContent(".message.user .text"), "Hello! Who are you?");
  await page.click("#chat-list button.open:text-is('Renamed chat')");
  page.once("dialog", (dialog) => dialog.accept());
  await page.locator("#chat-list li.current button.delete").click();
  assert.deepEqual(await chatTitles(page), ["Hello! Who are you?"]);
  assert.equal(await page.locator(".message").count(), 0);
  await page.reload();
  await page.waitForFunction(() => document.getElementById("model-name").textContent.length > 0);
  assert.deepEqual(await chatTitles(page), ["Hello! Who are you?"]);
  await page.click("#settings-toggle");

  step("a preset sets the templates in one click");
  await page.click("#presets button:text-is('ChatML')");
  assert.equal(await page.inputValue("#history-template"), "<|im_start|>{{name}}\n{{message}}<|im_end|>");
  await page.click("#presets button:text-is('Gemma')");
  assert.equal(await page.inputValue("#history-template"), "<start_of_turn>{{name}}\n{{message}}<end_of_turn>");
  assert.equal(await page.inputValue("#user"), "user");
  assert.equal(await activePreset(page), "Gemma");

  step("a conversation three times the context still gets replies, under the Gemma preset");
  const nCtx = 4096;
  const long = longConversation(3 * nCtx);
  await page.evaluate((turns) => {
    localStorage.setItem("llmfile.chats", JSON.stringify([{ id: "long", title: "Long" }, ...JSON.parse(localStorage.getItem("llmfile.chats"))]));
    localStorage.setItem("llmfile.chat:long", JSON.stringify(turns));
  }, long);
  await page.reload();
  await page.waitForFunction(() => document.getElementById("model-name").textContent.length > 0);
  await page.click("#chat-list button.open:text-is('Long')");
  assert.equal(await page.locator(".message").count(), long.length);
  const tokens = async (prompt) =>
    (await (await page.request.post(new URL("/tokenize", url).href, { data: { content: prompt, add_special: true } })).json()).tokens.length;
  assert.ok(await tokens(long.map((turn) => turn.message).join("\n")) > 3 * nCtx, "the conversation is three contexts long");
  await page.fill("#input", "Say hello.");
  await page.click("#send");
  // The stored turns carry no speed line: the reply's is the first.
  await page.waitForSelector(".message.bot .speed");
  assert.match(await page.textContent(".message.bot:last-of-type .speed"), /tokens\/s/);
  const trimmed = completions.at(-1).prompt;
  const dropped = Number((await page.textContent("#messages .note")).match(/^(\d+) earlier messages no longer fit/)[1]);
  assert.ok(dropped > 0 && dropped % 2 === 0, `whole exchanges are left out (${dropped})`);
  // The preset renders through the server's Gemma format, as the API would: Gemma has no
  // system turn, so the system text opens the first user turn.
  assert.equal(applied.at(-1).request.chat_template, "gemma");
  assert.equal(applied.at(-1).body.prompt, trimmed);
  assert.equal(2 * applied.at(-1).body.dropped_turns, dropped);
  assert.ok(trimmed.startsWith(`<start_of_turn>user\nYou are a helpful assistant.\n\n${long[dropped].message}`), trimmed.slice(0, 200));
  assert.ok(trimmed.includes(long.at(-1).message) && trimmed.endsWith("<start_of_turn>user\nSay hello.<end_of_turn>\n<start_of_turn>model\n"));
  const size = await tokens(trimmed);
  assert.ok(size + 40 <= nCtx, `the prompt fits (${size} tokens)`);
  // An exchange is about 420 tokens: one more would have fitted had the page left out too many.
  assert.ok(size + 40 > nCtx - 500, `no more than needed was left out (${size} tokens)`);

  step("and under the model's template");
  await page.click("#presets button:text-is(\"Model's template\")");
  await page.fill("#input", "Say it again.");
  await page.click("#send");
  await page.waitForFunction(() => document.querySelectorAll(".message.bot .speed").length === 2);
  assert.match(await page.textContent(".message.bot:last-of-type .speed"), /tokens\/s/);
  const serverTrimmed = applied.at(-1);
  assert.equal(serverTrimmed.request.messages.length, long.length + 4, "the page sends every message");
  assert.ok(serverTrimmed.body.dropped_turns > 0);
  assert.equal(completions.at(-1).prompt, serverTrimmed.body.prompt);
  assert.equal(await page.locator("#messages .note").count(), 2);
  assert.match(await page.locator("#messages .note").last().textContent(),
    new RegExp(`^${2 * serverTrimmed.body.dropped_turns} earlier messages no longer fit the context and were left out$`));
  await page.click("#new-chat");

  step("stop ends a reply early, new chat clears the conversation");
  await setField(page, "#n_predict", "2000");
  await page.fill("#input", "Write a long story.");
  await page.click("#send");
  await page.waitForFunction(() => (document.querySelector(".message.bot")?.textContent || "").length > 10);
  await page.click("#stop");
  await page.waitForSelector(".message.bot .speed:text-is('stopped')");
  assert.equal(await page.isDisabled("#send"), false);
  await page.click("#new-chat");
  assert.equal(await page.locator(".message").count(), 0);

  step("raw completion mode continues the text");
  await setField(page, "#n_predict", "12");
  await page.check("#mode-completion");
  assert.equal(await page.isHidden("#chats"), true);
  await page.fill("#raw-text", "The capital of France is");
  await page.click("#complete");
  await page.waitForFunction(() => /tokens\/s/.test(document.getElementById("status").textContent));
  const continued = await page.inputValue("#raw-text");
  assert.ok(continued.startsWith("The capital of France is") && continued.length > 30, continued);
  const raw = completions.at(-1);
  assert.equal(raw.prompt, "The capital of France is");
  assert.deepEqual(raw.stop, []);

  step("without /apply-template the model's format comes from its templates");
  await page.route("**/apply-template", (route) => route.fulfill({ status: 404, contentType: "application/json", body: "{}" }));
  await stubCompletion(page, "Fine.");
  await page.reload();
  await page.waitForFunction(() => document.getElementById("model-name").textContent.length > 0);
  assert.equal(await activePreset(page), "Model's template");
  await page.fill("#input", "Hi");
  await page.click("#send");
  await page.waitForSelector(".message.bot .speed");
  assert.equal(completions.at(-1).prompt,
    "<start_of_turn>system\nYou are a helpful assistant.<end_of_turn>\n<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
  await page.unroute("**/apply-template");
  await page.unroute("**/completion");

  assert.deepEqual(errors, [], "no script errors on the page");
  console.log("e2e: chat page OK");
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
