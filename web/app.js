// The chat page: llamafile's prompt and history templates over /completion, streamed.
"use strict";

const $ = (id) => document.getElementById(id);

const TEXT_FIELDS = ["prompt", "user", "char", "prompt-template", "history-template", "api-key"];
const NUMBER_FIELDS = ["n_predict", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "seed"];

let props = null;
let settings = {};
// The conversation: speakers are stored as the literal {{user}} / {{char}}, so renaming
// either one renames them throughout, as in llamafile.
let transcript = [];
let controller = null;

// ---- templates -------------------------------------------------------------------------

// Characters one expansion may produce, counting each level of nesting: far beyond any real
// prompt (the server refuses bodies over 4 MiB), and small enough that settings naming each
// other many times over end in an error rather than a frozen tab.
const EXPANSION_BUDGET = 16 << 20;

// A template value inserted as it is, never expanded: what a user typed in the chat.
class Literal {
  constructor(text) {
    this.text = text;
  }
}

// Replaces each {{key}} of text with vars[key], itself expanded the same way, since a value
// may name others ({{user}} in the system prompt). Inside its own expansion a key stays as it
// is, so values that name themselves or each other end. Literal values are inserted untouched.
// `budget.left` counts down the characters produced; past zero, this throws.
function expand(text, vars, budget = { left: EXPANSION_BUDGET }) {
  // The expansion of a key depends only on the keys being expanded around it.
  const done = new Map();
  const valueOf = (key, active) => {
    const id = `${key}:${[...active].sort().join(" ")}`;
    if (!done.has(id)) {
      const value = vars[key];
      done.set(id, value instanceof Literal ? value.text : expandIn(String(value), [...active, key]));
    }
    return done.get(id);
  };
  const produce = (part) => {
    budget.left -= part.length;
    if (budget.left < 0) {
      throw new Error(`the templates expand to more than ${EXPANSION_BUDGET} characters: ` +
        "check the settings for names that repeat one another");
    }
    return part;
  };
  const expandIn = (text, active) => {
    const parts = [];
    let last = 0;
    for (const match of text.matchAll(/\{\{(\w+)\}\}/g)) {
      const key = match[1];
      if (!Object.prototype.hasOwnProperty.call(vars, key) || active.includes(key)) continue;
      parts.push(produce(text.slice(last, match.index)), produce(valueOf(key, active)));
      last = match.index + match[0].length;
    }
    parts.push(produce(text.slice(last)));
    return parts.join("");
  };
  return expandIn(text, []);
}

function templateVars(settings) {
  return { prompt: settings.prompt, user: settings.user, char: settings.char };
}

// The whole prompt: every turn rendered by the history template and joined by newlines,
// inside the prompt template.
function buildPrompt(settings, transcript) {
  const vars = templateVars(settings);
  const budget = { left: EXPANSION_BUDGET };
  const history = transcript
    .map((turn) => expand(settings["history-template"],
      { ...vars, name: turn.name, message: new Literal(turn.message) }, budget))
    .join("\n");
  return expand(settings["prompt-template"], { ...vars, history: new Literal(history) }, budget);
}

// Text that starts a turn of either speaker ends the reply: the history template up to the
// message, for each name ("User:" for llamafile's default, "### Instruction:" for Alpaca).
function stopStrings(settings) {
  const stops = [];
  for (const name of ["{{user}}", "{{char}}"]) {
    const head = settings["history-template"].split("{{message}}")[0];
    const stop = expand(head, { ...templateVars(settings), name }).trim();
    if (stop) stops.push(stop);
  }
  return stops;
}

// ---- settings --------------------------------------------------------------------------

function storageKey() {
  return `llmfile.settings:${props ? props.model : ""}`;
}

function defaults() {
  const t = props.templates;
  const g = props.default_generation_settings;
  return {
    prompt: t.system,
    user: t.user,
    char: t.char,
    "prompt-template": t.prompt,
    "history-template": t.history,
    "api-key": settings["api-key"] || "",
    n_predict: g.n_predict < 0 ? 1024 : g.n_predict,
    temperature: g.temperature,
    top_k: g.top_k,
    top_p: g.top_p,
    min_p: g.min_p,
    repeat_penalty: g.repeat_penalty,
    repeat_last_n: g.repeat_last_n,
    seed: g.seed,
  };
}

function showSettings() {
  for (const id of TEXT_FIELDS) $(id).value = settings[id] ?? "";
  for (const id of NUMBER_FIELDS) $(id).value = settings[id] ?? "";
  for (const button of $("presets").children) {
    const preset = props.presets[Number(button.dataset.index)];
    button.classList.toggle("active",
      preset.prompt === settings["prompt-template"] && preset.history === settings["history-template"]);
  }
}

function readSettings() {
  for (const id of TEXT_FIELDS) settings[id] = $(id).value;
  for (const id of NUMBER_FIELDS) {
    const value = Number($(id).value);
    if ($(id).value !== "" && Number.isFinite(value)) settings[id] = value;
  }
  localStorage.setItem(storageKey(), JSON.stringify(settings));
  showSettings();
}

function applyPreset(preset) {
  Object.assign(settings, {
    prompt: preset.system,
    user: preset.user,
    char: preset.char,
    "prompt-template": preset.prompt,
    "history-template": preset.history,
  });
  localStorage.setItem(storageKey(), JSON.stringify(settings));
  showSettings();
}

// ---- rendering -------------------------------------------------------------------------

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// Fenced code blocks become <pre>, `inline code` becomes <code>; everything else stays text.
function renderMarkdown(text) {
  const parts = text.split(/```/);
  return parts.map((part, i) => {
    if (i % 2 === 1) {
      const body = part.replace(/^[\w+-]*\n/, "");
      return `<pre><code>${escapeHtml(body)}</code></pre>`;
    }
    return escapeHtml(part).replace(/`([^`\n]+)`/g, "<code>$1</code>");
  }).join("");
}

function addMessage(kind, text) {
  const element = document.createElement("div");
  element.className = `message ${kind}`;
  element.innerHTML = renderMarkdown(text);
  $("messages").appendChild(element);
  element.scrollIntoView({ block: "end" });
  return element;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("complete").disabled = busy;
  $("stop").disabled = !busy;
  $("stop-completion").disabled = !busy;
}

// ---- the server ------------------------------------------------------------------------

function headers() {
  const h = { "Content-Type": "application/json" };
  if (settings["api-key"]) h.Authorization = `Bearer ${settings["api-key"]}`;
  return h;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : response.statusText;
  } catch {
    return response.statusText;
  }
}

// Streams a completion; onText gets each piece, the result is the final event.
async function complete(prompt, stop, onText) {
  controller = new AbortController();
  const body = {
    prompt,
    stream: true,
    cache_prompt: true,
    parse_special: true,
    stop,
  };
  for (const id of NUMBER_FIELDS) body[id] = settings[id];
  const response = await fetch("/completion", {
    method: "POST",
    headers: headers(),
    body: JSON.stringify(body),
    signal: controller.signal,
  });
  if (!response.ok) throw new Error(await errorText(response));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = JSON.parse(line.slice(6));
        if (data.error) throw new Error(data.error.message);
        if (data.content) onText(data.content);
        if (data.stop) last = data;
      }
    }
  }
  return last;
}

function speed(final) {
  if (!final || !final.timings) return "";
  const t = final.timings;
  return `${t.predicted_n} tokens, ${t.predicted_per_second.toFixed(1)} tokens/s` +
    ` (prompt: ${t.prompt_n} new tokens, ${t.prompt_per_second.toFixed(1)} tokens/s)`;
}

async function sendMessage(text) {
  transcript.push({ name: "{{user}}", message: text });
  addMessage("user", text);
  const element = addMessage("bot", "");
  let reply = "";
  setBusy(true);
  setStatus("");
  try {
    const final = await complete(buildPrompt(settings, transcript), stopStrings(settings), (piece) => {
      reply += piece;
      element.innerHTML = renderMarkdown(reply);
      element.scrollIntoView({ block: "end" });
    });
    finishReply(element, reply, speed(final));
  } catch (error) {
    if (error.name === "AbortError") {
      finishReply(element, reply, "stopped");
    } else {
      transcript.pop();
      element.remove();
      setStatus(`Error: ${error.message}`, true);
    }
  } finally {
    setBusy(false);
    controller = null;
  }
}

function finishReply(element, reply, note) {
  // llamafile drops one leading space of each bot message.
  reply = reply.replace(/^ /, "");
  transcript.push({ name: "{{char}}", message: reply });
  element.innerHTML = renderMarkdown(reply);
  const info = document.createElement("span");
  info.className = "speed";
  info.textContent = note;
  element.appendChild(info);
}

async function continueText() {
  const area = $("raw-text");
  setBusy(true);
  setStatus("");
  try {
    const final = await complete(area.value, [], (piece) => {
      area.value += piece;
      area.scrollTop = area.scrollHeight;
    });
    setStatus(speed(final));
  } catch (error) {
    setStatus(error.name === "AbortError" ? "stopped" : `Error: ${error.message}`, error.name !== "AbortError");
  } finally {
    setBusy(false);
    controller = null;
  }
}

// ---- wiring ----------------------------------------------------------------------------

function newChat() {
  if (controller) controller.abort();
  transcript = [];
  $("messages").replaceChildren();
  setStatus("");
}

function setMode(mode) {
  $("chat-view").hidden = mode !== "chat";
  $("completion-view").hidden = mode !== "completion";
  $("new-chat").hidden = mode !== "chat";
}

async function loadProps() {
  const response = await fetch("/props", { headers: headers() });
  if (!response.ok) throw new Error(await errorText(response));
  return response.json();
}

async function start() {
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("input").value.trim();
    if (!text || controller || !props) return;
    $("input").value = "";
    sendMessage(text);
  });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("stop-completion").addEventListener("click", () => controller && controller.abort());
  $("complete").addEventListener("click", () => !controller && props && continueText());
  $("new-chat").addEventListener("click", newChat);
  $("settings-toggle").addEventListener("click", () => {
    const open = $("settings").hidden;
    $("settings").hidden = !open;
    $("settings-toggle").setAttribute("aria-expanded", String(open));
  });
  for (const input of document.querySelectorAll("input[name=mode]")) {
    input.addEventListener("change", () => setMode(input.value));
  }
  for (const id of [...TEXT_FIELDS, ...NUMBER_FIELDS]) $(id).addEventListener("change", readSettings);
  $("reset").addEventListener("click", () => {
    settings = defaults();
    localStorage.setItem(storageKey(), JSON.stringify(settings));
    showSettings();
  });
  setBusy(false);

  settings["api-key"] = localStorage.getItem("llmfile.api-key") || "";
  $("api-key").addEventListener("change", () => localStorage.setItem("llmfile.api-key", $("api-key").value));
  try {
    props = await loadProps();
  } catch (error) {
    $("settings").hidden = false;
    $("api-key").value = settings["api-key"];
    setStatus(`Cannot read the server's settings: ${error.message}. If it wants an API key, enter it in Settings and reload.`, true);
    return;
  }
  $("model-name").textContent = `${props.model} · ${props.chat_format} format · context ${props.n_ctx}`;
  props.presets.forEach((preset, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = preset.name;
    button.dataset.index = String(index);
    button.addEventListener("click", () => applyPreset(preset));
    $("presets").appendChild(button);
  });
  const saved = localStorage.getItem(storageKey());
  settings = { ...defaults(), ...(saved ? JSON.parse(saved) : {}) };
  showSettings();
}

// Under node, for tests/web_templates.mjs, there is no page: the templates are all there is.
if (typeof document === "undefined") {
  module.exports = { expand, buildPrompt, stopStrings, Literal, EXPANSION_BUDGET };
} else {
  start();
}
