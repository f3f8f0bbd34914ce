// Randomized tests of the chat page's template expansion (web/app.js), which libFuzzer cannot
// reach: thousands of random templates, names and messages from a seeded generator, checked
// against a plain recursive statement of the rules, that what a user types is never expanded,
// and that values naming each other end quickly. Run: node tests/web_templates.mjs [SEED]
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { expand, buildPrompt, stopStrings, Literal, EXPANSION_BUDGET } = require("../web/app.js");

const seed = Number(process.argv[2] ?? 20250101);
const CASES = 5000;
// A single expansion this slow means work that grows with nesting rather than with the text.
const SLOW_MS = 250;

// mulberry32: small, seedable, good enough to pick fragments.
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = prng(seed);
const pick = (items) => items[Math.floor(random() * items.length)];

// Pieces that matter to the expansion: every key, broken and nested braces, NUL-digit runs
// (the old placeholders of messages), replacement patterns of String.replace, and plain text.
const FRAGMENTS = [
  "{{user}}", "{{char}}", "{{prompt}}", "{{history}}", "{{name}}", "{{message}}", "{{unknown}}",
  "{{", "}}", "{", "}", "{{{user}}}", "{{user}", "{ {char}}", "{{ user }}",
  "\u0000", "\u00000\u0000", "\u00001\u0000", "\u000099\u0000", "0", "7",
  "$&", "$1", "$$", "$`", "a", "b", "text", " ", "\n", "é", "🙂",
];

function randomText(maxFragments) {
  const n = Math.floor(random() * (maxFragments + 1));
  let text = "";
  for (let i = 0; i < n; i++) text += pick(FRAGMENTS);
  return text;
}

// The rules, stated plainly: each {{key}} of vars becomes its value expanded with that key
// left alone inside it; Literal values go in untouched; anything else stays.
function reference(text, vars, active = []) {
  return text.replace(/\{\{(\w+)\}\}/g, (match, key) => {
    if (!Object.prototype.hasOwnProperty.call(vars, key) || active.includes(key)) return match;
    const value = vars[key];
    return value instanceof Literal ? value.text : reference(String(value), vars, [...active, key]);
  });
}

function referencePrompt(settings, transcript) {
  const vars = { prompt: settings.prompt, user: settings.user, char: settings.char };
  const history = transcript
    .map((turn) => reference(settings["history-template"],
      { ...vars, name: turn.name, message: new Literal(turn.message) }))
    .join("\n");
  return reference(settings["prompt-template"], { ...vars, history: new Literal(history) });
}

function timed(what, f) {
  const start = performance.now();
  let result;
  let error;
  try {
    result = f();
  } catch (e) {
    error = e;
  }
  const ms = performance.now() - start;
  assert.ok(ms < SLOW_MS, `${what} took ${ms.toFixed(0)} ms`);
  return { result, error };
}

function randomSettings(maxFragments) {
  return {
    prompt: randomText(maxFragments),
    user: randomText(maxFragments),
    char: randomText(maxFragments),
    "prompt-template": randomText(maxFragments),
    "history-template": randomText(maxFragments),
  };
}

function randomTranscript() {
  const turns = Math.floor(random() * 5);
  return Array.from({ length: turns }, (_, i) => ({
    name: i % 2 === 0 ? "{{user}}" : "{{char}}",
    message: randomText(6),
  }));
}

// 1. Random settings and conversations give what the rules say, within the time limit.
function agreesWithTheRules() {
  for (let i = 0; i < CASES; i++) {
    const settings = randomSettings(6);
    const transcript = randomTranscript();
    const context = JSON.stringify({ seed, i, settings, transcript });
    const { result, error } = timed(context, () => buildPrompt(settings, transcript));
    assert.equal(error, undefined, context);
    assert.equal(result, referencePrompt(settings, transcript), context);
    const stops = stopStrings(settings);
    assert.ok(stops.every((stop) => stop.length > 0 && stop === stop.trim()), context);
  }
}

// 2. Whatever a message holds, it comes out exactly as typed wherever the templates put it.
function messagesAreNeverExpanded() {
  for (let i = 0; i < CASES; i++) {
    const settings = randomSettings(4);
    settings["history-template"] = `${randomText(3)}<<{{message}}>>${randomText(3)}`;
    settings["prompt-template"] = `${randomText(3)}{{history}}${randomText(3)}`;
    const transcript = randomTranscript().map((turn, n) => ({ ...turn, message: `[${n}:${turn.message}:${n}]` }));
    const prompt = buildPrompt(settings, transcript);
    const context = JSON.stringify({ seed, i, settings, transcript, prompt });
    for (const turn of transcript) assert.ok(prompt.includes(`<<${turn.message}>>`), context);
  }
}

// 3. Values that name themselves or each other end, at once, with the self-reference left
// as it is; fan-out beyond the budget ends in an error that says so.
function nestingEndsQuickly() {
  const plain = { "prompt-template": "{{prompt}}|{{history}}", "history-template": "{{name}}: {{message}}" };
  const transcript = [{ name: "{{user}}", message: "hi {{user}} \u00000\u0000" }, { name: "{{char}}", message: "$&" }];

  const selfNamed = { ...plain, prompt: "p", user: "{{user}}x", char: "{{char}}{{user}}" };
  assert.equal(buildPrompt(selfNamed, transcript),
    "p|{{user}}x: hi {{user}} \u00000\u0000\n{{char}}{{user}}x: $&");

  const mutual = { ...plain, prompt: "{{user}}", user: "<{{char}}>", char: "({{prompt}})" };
  assert.equal(buildPrompt(mutual, []), "<({{prompt}})>|");

  for (const fanOut of [2, 10, 50, 1000]) {
    const wide = {
      ...plain,
      prompt: "{{user}}".repeat(fanOut),
      user: "{{char}}".repeat(fanOut),
      char: "{{user}}".repeat(fanOut) + "0123456789",
    };
    const { result, error } = timed(`fan-out ${fanOut}`, () => buildPrompt(wide, transcript));
    const size = 10 * fanOut ** 2;
    if (size * 2 < EXPANSION_BUDGET) {
      assert.equal(error, undefined);
      assert.ok(result.startsWith(`{{user}}`.repeat(fanOut)));
    } else {
      assert.match(error.message, /the templates expand to more than/);
    }
  }

  // The old expansion went ten levels deep over the whole text: 10 names each ten times over
  // was 10^10 copies.
  const deep = { ...plain, prompt: "", user: "{{user}}".repeat(10), char: "c" };
  const { result } = timed("ten self-references", () => buildPrompt(deep, transcript));
  assert.ok(result.includes(`${"{{user}}".repeat(10)}: hi {{user}}`));

  // Long conversations share one budget rather than one each.
  const heavyName = { ...plain, prompt: "", user: "{{char}}".repeat(4000), char: "0123456789".repeat(100) };
  const many = Array.from({ length: 50 }, () => ({ name: "{{user}}", message: "m" }));
  const { error } = timed("50 turns of 4 MB names", () => buildPrompt(heavyName, many));
  assert.match(error.message, /the templates expand to more than/);
}

// 4. Cases the placeholder scheme of messages (\u0000N\u0000) got wrong.
function settingsKeepNulDigits() {
  const settings = {
    prompt: "system \u00000\u0000 and \u00005\u0000",
    user: "u\u00001\u0000",
    char: "c",
    "prompt-template": "{{prompt}}\n{{history}}\n\u00000\u0000",
    "history-template": "{{name}}: {{message}}",
  };
  const transcript = [{ name: "{{user}}", message: "first" }, { name: "{{char}}", message: "second" }];
  assert.equal(buildPrompt(settings, transcript),
    "system \u00000\u0000 and \u00005\u0000\nu\u00001\u0000: first\nc: second\n\u00000\u0000");
  assert.deepEqual(stopStrings({ ...settings, "history-template": "\u00000\u0000{{name}}:{{message}}" }),
    ["\u00000\u0000u\u00001\u0000:", "\u00000\u0000c:"]);
}

const started = performance.now();
agreesWithTheRules();
messagesAreNeverExpanded();
nestingEndsQuickly();
settingsKeepNulDigits();
assert.equal(expand("{{a}}", { a: new Literal("{{a}}") }), "{{a}}");
console.log(`web_templates: ${2 * CASES} random cases and the edge cases pass ` +
  `(seed ${seed}, ${((performance.now() - started) / 1000).toFixed(1)} s)`);
