// The chat page in a real browser: Debian's chromium, driven by playwright-core (which never
// downloads a browser). Usage: node chat.mjs URL [SCREENSHOT.png]
//
// Against a server running Gemma 3 270M it sends a message and sees the reply stream in, edits
// the templates and sees the next request use them, checks that settings survive a reload,
// the stop and new-chat buttons, a preset, and the raw completion mode.

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

try {
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  const completions = [];
  page.on("request", (request) => {
    if (new URL(request.url()).pathname === "/completion") {
      completions.push(JSON.parse(request.postData()));
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
  // Short replies keep the test quick; a change event saves the setting.
  await page.fill("#n_predict", "40");
  await page.dispatchEvent("#n_predict", "change");
  await page.fill("#temperature", "0");
  await page.dispatchEvent("#temperature", "change");

  step("a message gets a streamed reply");
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
  assert.equal(
    first.prompt,
    "<start_of_turn>system\nYou are a helpful assistant.<end_of_turn>\n" +
      "<start_of_turn>user\nHello! Who are you?<end_of_turn>\n<start_of_turn>model\n",
  );

  step("edited templates and names are used by the next request");
  await page.fill("#prompt-template", "CUSTOM {{prompt}}\n{{history}}\n<start_of_turn>{{char}}\n");
  await page.dispatchEvent("#prompt-template", "change");
  await page.fill("#history-template", "[{{name}}] {{message}}");
  await page.dispatchEvent("#history-template", "change");
  await page.fill("#user", "human");
  await page.dispatchEvent("#user", "change");
  await page.fill("#input", "Tell me more.");
  await page.click("#send");
  await page.waitForFunction(() => document.querySelectorAll(".message.bot .speed").length === 2);
  const second = completions.at(-1);
  assert.ok(second.prompt.startsWith("CUSTOM You are a helpful assistant.\n[human] Hello! Who are you?\n[model] "), second.prompt);
  assert.ok(second.prompt.endsWith("\n[human] Tell me more.\n<start_of_turn>model\n"), second.prompt);
  assert.deepEqual(second.stop, ["[human]", "[model]"]);

  step("settings survive a reload");
  await page.reload();
  await page.waitForFunction(() => document.getElementById("model-name").textContent.length > 0);
  await page.click("#settings-toggle");
  assert.equal(await page.inputValue("#history-template"), "[{{name}}] {{message}}");
  assert.equal(await page.inputValue("#user"), "human");

  step("a preset sets the templates in one click");
  await page.click("#presets button:text-is('ChatML')");
  assert.equal(await page.inputValue("#history-template"), "<|im_start|>{{name}}\n{{message}}<|im_end|>");
  await page.click("#presets button:text-is('Gemma')");
  assert.equal(await page.inputValue("#history-template"), "<start_of_turn>{{name}}\n{{message}}<end_of_turn>");

  step("stop ends a reply early, new chat clears the conversation");
  await page.fill("#n_predict", "2000");
  await page.dispatchEvent("#n_predict", "change");
  await page.fill("#input", "Write a long story.");
  await page.click("#send");
  await page.waitForFunction(() => (document.querySelector(".message.bot")?.textContent || "").length > 10);
  await page.click("#stop");
  await page.waitForSelector(".message.bot .speed:text-is('stopped')");
  assert.equal(await page.isDisabled("#send"), false);
  await page.click("#new-chat");
  assert.equal(await page.locator(".message").count(), 0);

  step("raw completion mode continues the text");
  await page.fill("#n_predict", "12");
  await page.dispatchEvent("#n_predict", "change");
  await page.check("#mode-completion");
  await page.fill("#raw-text", "The capital of France is");
  await page.click("#complete");
  await page.waitForFunction(() => /tokens\/s/.test(document.getElementById("status").textContent));
  const continued = await page.inputValue("#raw-text");
  assert.ok(continued.startsWith("The capital of France is") && continued.length > 30, continued);
  const raw = completions.at(-1);
  assert.equal(raw.prompt, "The capital of France is");
  assert.deepEqual(raw.stop, []);

  assert.deepEqual(errors, [], "no script errors on the page");
  console.log("e2e: chat page OK");
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
