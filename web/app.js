// The chat page: conversations kept in the browser, each prompt built by the model's own chat
// template (/apply-template) or by llamafile's prompt and history templates, replies streamed
// from /completion and shown as sanitized, highlighted Markdown.
"use strict";

const $ = (id) => document.getElementById(id);

const TEXT_FIELDS = ["prompt", "user", "char", "prompt-template", "history-template", "api-key"];
const NUMBER_FIELDS = ["n_predict", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "seed"];

// The server reports a random seed as u32::MAX; the field and requests say -1, as llama.cpp does.
const RANDOM_SEED = 4294967295;
// Room kept for the reply when n_predict is -1 (until the end of text), so a long conversation
// still leaves the model something to say.
const UNBOUNDED_REPLY_RESERVE = 256;

let props = null;
let settings = {};
let controller = null;
// False once the server has answered 404: one from before /apply-template existed, where the
// model's own format is still reached through its prompt and history templates.
let applyTemplateServed = true;

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
    "model-template": true,
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
    seed: g.seed === RANDOM_SEED ? -1 : g.seed,
  };
}

function loadSettings() {
  const saved = readJson(storageKey(), null);
  const initial = defaults();
  settings = { ...initial, ...saved };
  if (settings.seed === RANDOM_SEED) settings.seed = -1;
  // Settings saved before the model's template was offered keep templates that were changed.
  if (saved && !("model-template" in saved)) {
    settings["model-template"] = saved["prompt-template"] === initial["prompt-template"] &&
      saved["history-template"] === initial["history-template"];
  }
}

function saveSettings() {
  localStorage.setItem(storageKey(), JSON.stringify(settings));
  showSettings();
}

function showSettings() {
  for (const id of TEXT_FIELDS) $(id).value = settings[id] ?? "";
  for (const id of NUMBER_FIELDS) $(id).value = settings[id] ?? "";
  const own = settings["model-template"];
  const named = settings["chat-template"] || null;
  for (const button of $("presets").children) {
    const preset = props.presets[Number(button.dataset.index)];
    // A preset renders through the server's template of its name; edited templates are the
    // page's own, and a preset lights up only while its templates are still unedited.
    const active = own
      ? (preset ? preset.chat_template : null) === named
      : Boolean(preset) && preset.prompt === settings["prompt-template"] && preset.history === settings["history-template"];
    button.classList.toggle("active", active);
  }
  $("template-hint").hidden = !own;
  $("chat-template-view").hidden = !own || !props.chat_template;
}

function readSettings(event) {
  for (const id of TEXT_FIELDS) settings[id] = $(id).value;
  for (const id of NUMBER_FIELDS) {
    const value = Number($(id).value);
    if ($(id).value !== "" && Number.isFinite(value)) settings[id] = value;
  }
  // Whoever edits the templates means them to be used.
  if (["prompt-template", "history-template"].includes(event.target.id)) settings["model-template"] = false;
  saveSettings();
}

// Every preset renders through /apply-template: the model's own template, or the built-in
// format the preset names, so the page sends the text the API would. Its prompt and history
// templates are shown, and used once edited.
function applyPreset(preset, modelTemplate) {
  Object.assign(settings, {
    "model-template": true,
    "chat-template": modelTemplate ? null : preset.chat_template,
    prompt: preset.system,
    user: preset.user,
    char: preset.char,
    "prompt-template": preset.prompt,
    "history-template": preset.history,
  });
  saveSettings();
}

// ---- Markdown --------------------------------------------------------------------------

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// Guessing the language of an unlabelled block tries every grammar; the block still streaming
// in is shown plain until it is complete, rather than guessed again at every frame.
let guessLanguages = true;

function setUpMarkdown() {
  marked.use({
    gfm: true,
    // Models break lines with single newlines, in verse and in lists of their own making.
    breaks: true,
    renderer: {
      code({ text, lang }) {
        const language = (lang || "").split(/\s/)[0];
        let result = null;
        if (hljs.getLanguage(language)) {
          result = hljs.highlight(text, { language, ignoreIllegals: true });
        } else if (guessLanguages) {
          result = hljs.highlightAuto(text);
        }
        const html = result ? result.value : escapeHtml(text);
        const name = result && result.language ? ` language-${escapeHtml(result.language)}` : "";
        return `<pre><code class="hljs${name}">${html}</code></pre>\n`;
      },
    },
  });
  // Links the model writes open beside the chat rather than in place of it.
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
}

// A bot message's Markdown, re-rendered as its text grows. Each top-level block (paragraph,
// list, code block) is its own element and is rebuilt only when its source changes, so a long
// reply costs one lexing pass and the last block per frame, not the whole text sanitized and
// highlighted again.
class MarkdownView {
  constructor(element) {
    this.element = element;
    this.sources = [];
    this.links = "";
    this.text = "";
    this.frame = 0;
  }

  // While streaming: renders at most once per frame.
  update(text) {
    this.text = text;
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.render(this.text, false);
      });
    }
  }

  finish(text) {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.render(text, true);
  }

  render(text, complete) {
    const tokens = marked.lexer(text);
    // A link definition reaches back to earlier blocks: a new one redraws them all.
    const links = JSON.stringify(tokens.links);
    if (links !== this.links) {
      this.links = links;
      this.sources = [];
    }
    const blocks = tokens.filter((token) => token.type !== "space" && token.type !== "def");
    const children = this.element.children;
    blocks.forEach((token, i) => {
      const open = !complete && i === blocks.length - 1;
      // The open block is drawn again once complete, when it may guess its language.
      const source = `${open ? "open" : "done"}:${token.raw}`;
      if (this.sources[i] === source) return;
      const block = document.createElement("div");
      const list = [token];
      list.links = tokens.links;
      guessLanguages = !open;
      block.innerHTML = DOMPurify.sanitize(marked.parser(list));
      for (const pre of block.querySelectorAll("pre")) addCopyButton(pre);
      if (children[i]) children[i].replaceWith(block);
      else this.element.appendChild(block);
      this.sources[i] = source;
    });
    while (children.length > blocks.length) children[blocks.length].remove();
    this.sources.length = blocks.length;
  }
}

function addCopyButton(pre) {
  const wrapper = document.createElement("div");
  wrapper.className = "code";
  pre.replaceWith(wrapper);
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.textContent = "Copy";
  wrapper.append(button, pre);
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return;
  } catch {
    // No clipboard API outside a secure context (the page opened over http by a LAN address):
    // the old way, through a selection.
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  const copied = document.execCommand("copy");
  area.remove();
  if (!copied) throw new Error("the browser refused to copy");
}

async function copyCode(button) {
  try {
    await copyText(button.parentElement.querySelector("code").textContent);
    button.textContent = "Copied";
  } catch (error) {
    button.textContent = "Cannot copy";
    setStatus(`Cannot copy: ${error.message}`, true);
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

// ---- conversations ---------------------------------------------------------------------

// Each conversation's turns are kept under their own key, so a reply rewrites only its own;
// the list (id and title, the most recently used first) is kept apart.
const CHATS_KEY = "llmfile.chats";
const OPEN_CHAT_KEY = "llmfile.open-chat";
const chatKey = (id) => `llmfile.chat:${id}`;

let chats = [];
// The conversation shown: { id, turns }, id null until its first message is kept. A turn is
// { name, message } with the speaker stored as the literal {{user}} / {{char}}, so renaming
// either one renames them throughout, as in llamafile; a bot turn also keeps its `info` line
// and how many earlier messages its prompt `dropped`.
let chat = { id: null, turns: [] };

function readJson(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

function store(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch (error) {
    setStatus(`Cannot keep the conversation: ${error.message}. Deleting old conversations makes room.`, true);
  }
}

function titleOf(turns) {
  const first = turns.find((turn) => turn.name === "{{user}}");
  const line = first ? first.message.trim().split("\n")[0] : "";
  return line.length > 48 ? `${line.slice(0, 47)}…` : line || "New chat";
}

// The list as stored now: another tab may have changed it since this one read it.
function freshChats() {
  chats = readJson(CHATS_KEY, []);
  return chats;
}

function saveChat(conversation) {
  if (conversation.deleted) return;
  freshChats();
  if (!conversation.id) {
    conversation.id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  }
  const entry = chats.find((c) => c.id === conversation.id) || { id: conversation.id, title: titleOf(conversation.turns) };
  chats = [entry, ...chats.filter((c) => c !== entry)];
  store(chatKey(conversation.id), conversation.turns);
  store(CHATS_KEY, chats);
  if (conversation === chat) localStorage.setItem(OPEN_CHAT_KEY, conversation.id);
  renderChatList();
}

function showChat(conversation) {
  if (controller) controller.abort();
  chat = conversation;
  if (chat.id) localStorage.setItem(OPEN_CHAT_KEY, chat.id);
  else localStorage.removeItem(OPEN_CHAT_KEY);
  renderMessages();
  renderChatList();
  setStatus("");
}

function openChat(id) {
  if (chat.id !== id) showChat({ id, turns: readJson(chatKey(id), []) });
}

function newChat() {
  if (chat.id || chat.turns.length) showChat({ id: null, turns: [] });
}

function deleteChat(id) {
  const entry = freshChats().find((c) => c.id === id);
  if (!entry || !confirm(`Delete the conversation "${entry.title}"?`)) return;
  chats = chats.filter((c) => c !== entry);
  localStorage.removeItem(chatKey(id));
  store(CHATS_KEY, chats);
  if (chat.id === id) {
    // A reply still streaming into it must not bring it back.
    chat.deleted = true;
    showChat({ id: null, turns: [] });
  } else {
    renderChatList();
  }
}

function renameChat(item, entry) {
  const input = document.createElement("input");
  input.type = "text";
  input.value = entry.title;
  input.className = "rename-input";
  input.setAttribute("aria-label", "New name");
  let done = false;
  const finish = (keep) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    const stored = freshChats().find((c) => c.id === entry.id);
    if (keep && title && stored) {
      stored.title = title;
      store(CHATS_KEY, chats);
    }
    renderChatList();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") finish(true);
    if (event.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
  item.replaceChildren(input);
  input.focus();
  input.select();
}

function renderChatList() {
  const list = $("chat-list");
  list.replaceChildren(...chats.map((entry) => {
    const item = document.createElement("li");
    item.classList.toggle("current", entry.id === chat.id);
    const open = button(entry.title, "open", () => openChat(entry.id));
    open.title = entry.title;
    const rename = button("✎", "rename", () => renameChat(item, entry));
    rename.title = "Rename";
    rename.setAttribute("aria-label", "Rename");
    const remove = button("×", "delete", () => deleteChat(entry.id));
    remove.title = "Delete";
    remove.setAttribute("aria-label", "Delete");
    item.append(open, rename, remove);
    return item;
  }));
  $("no-chats").hidden = chats.length > 0;
}

// ---- the conversation on the page -------------------------------------------------------

function button(text, className, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.textContent = text;
  element.addEventListener("click", onClick);
  return element;
}

function droppedNote(count) {
  const note = document.createElement("p");
  note.className = "note";
  note.textContent = count === 1
    ? "1 earlier message no longer fits the context and was left out"
    : `${count} earlier messages no longer fit the context and were left out`;
  return note;
}

function userElement(text) {
  const element = document.createElement("div");
  element.className = "message user";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  element.appendChild(body);
  return element;
}

function botElement() {
  const element = document.createElement("div");
  element.className = "message bot";
  const body = document.createElement("div");
  body.className = "markdown";
  element.appendChild(body);
  return { element, view: new MarkdownView(body) };
}

function setInfo(element, text) {
  const info = document.createElement("span");
  info.className = "speed";
  info.textContent = text;
  element.appendChild(info);
}

function renderMessages() {
  const messages = $("messages");
  messages.replaceChildren();
  for (const turn of chat.turns) {
    if (turn.name === "{{user}}") {
      messages.appendChild(userElement(turn.message));
      continue;
    }
    if (turn.dropped) messages.appendChild(droppedNote(turn.dropped));
    const { element, view } = botElement();
    view.finish(turn.message);
    if (turn.info) setInfo(element, turn.info);
    messages.appendChild(element);
  }
  updateTools();
  messages.lastElementChild?.scrollIntoView({ block: "end" });
}

// Only the last exchange can be redone: every later turn answered it. Its user message can be
// edited, and its reply made again (or, after an error left none, asked for again).
function updateTools() {
  for (const tools of $("messages").querySelectorAll(".tools")) tools.remove();
  if (controller || !chat.turns.length) return;
  const elements = $("messages").querySelectorAll(".message");
  const last = chat.turns.length - 1;
  const edit = (index) => button("Edit", "edit", () => editMessage(index));
  if (chat.turns[last].name === "{{user}}") {
    addTools(elements[last], edit(last), button("Retry", "regenerate", () => reply(chat)));
    return;
  }
  if (chat.turns[last - 1]?.name === "{{user}}") addTools(elements[last - 1], edit(last - 1));
  addTools(elements[last], button("Regenerate", "regenerate", regenerate));
}

function addTools(element, ...buttons) {
  const tools = document.createElement("div");
  tools.className = "tools";
  tools.append(...buttons);
  element.appendChild(tools);
}

function regenerate() {
  if (controller) return;
  chat.turns.pop();
  renderMessages();
  reply(chat);
}

function editMessage(index) {
  const element = $("messages").querySelectorAll(".message")[index];
  const area = document.createElement("textarea");
  area.value = chat.turns[index].message;
  area.rows = Math.min(12, area.value.split("\n").length + 1);
  const save = button("Send", "save", () => {
    const text = area.value.trim();
    if (!text || controller) return;
    chat.turns.splice(index);
    sendMessage(text);
  });
  element.classList.add("editing");
  element.replaceChildren(area);
  addTools(element, save, button("Cancel", "cancel", renderMessages));
  area.focus();
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
  updateTools();
}

function nearBottom() {
  return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 80;
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

async function post(path, body) {
  return fetch(path, {
    method: "POST",
    headers: headers(),
    body: JSON.stringify(body),
    signal: controller.signal,
  });
}

async function postJson(path, body) {
  const response = await post(path, body);
  if (!response.ok) throw new Error(await errorText(response));
  return response.json();
}

// Streams a completion; onText gets each piece, the result is the final event.
async function complete(prompt, stop, onText) {
  const body = {
    prompt,
    stream: true,
    cache_prompt: true,
    parse_special: true,
    stop,
  };
  for (const id of NUMBER_FIELDS) body[id] = settings[id];
  const response = await post("/completion", body);
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

function replyReserve() {
  return settings.n_predict < 0 ? UNBOUNDED_REPLY_RESERVE : settings.n_predict;
}

// The prompt for `turns`, its stop strings, and how many of the earliest turns it leaves out
// to fit the context.
async function preparePrompt(turns) {
  if (settings["model-template"] && applyTemplateServed) {
    const system = expand("{{prompt}}", templateVars(settings));
    const messages = [
      ...(system ? [{ role: "system", content: system }] : []),
      ...turns.map((turn) => ({ role: turn.name === "{{user}}" ? "user" : "assistant", content: turn.message })),
    ];
    const body = { messages, n_predict: replyReserve() };
    if (settings["chat-template"]) body.chat_template = settings["chat-template"];
    const response = await post("/apply-template", body);
    if (response.status !== 404) {
      if (!response.ok) throw new Error(await errorText(response));
      const applied = await response.json();
      // The template's end of turn is the model's end-of-generation token: no stop text needed.
      // The server leaves out whole turns, each a user message and what answered it: the
      // note counts messages, so the count is where the first kept turn starts.
      const turnStarts = turns.flatMap((turn, index) => (turn.name === "{{user}}" ? [index] : []));
      const dropped = applied.dropped_turns ? turnStarts[applied.dropped_turns] ?? turns.length - 1 : 0;
      return { prompt: applied.prompt, stop: [], dropped };
    }
    applyTemplateServed = false;
  }
  return fitTemplates(turns);
}

function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}

// Under the prompt and history templates the page keeps the prompt within the context itself:
// it leaves out the fewest earliest exchanges (the system prompt stays) that let the prompt and
// the reply's reserve fit, found by bisection, a few /tokenize calls however long the chat.
async function fitTemplates(turns) {
  const stop = stopStrings(settings);
  const nCtx = props.n_ctx ?? props.default_generation_settings.n_ctx;
  const room = nCtx - replyReserve();
  const from = (start) => buildPrompt(settings, turns.slice(start));
  const fits = async (start) => {
    const prompt = from(start);
    // Every token is at least a byte of text, and the server adds one BOS: so short a prompt
    // fits without being counted.
    if (utf8Length(prompt) + 1 <= room) return true;
    const { tokens } = await postJson("/tokenize", { content: prompt, add_special: true });
    return tokens.length <= room;
  };
  if (await fits(0)) return { prompt: from(0), stop, dropped: 0 };
  // The history starts at a user message; the newest one always stays, fit or not (the server
  // then says how far over it is).
  const starts = [];
  turns.forEach((turn, i) => i > 0 && turn.name === "{{user}}" && starts.push(i));
  let low = 0;
  let high = starts.length - 1;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (await fits(starts[middle])) high = middle;
    else low = middle + 1;
  }
  const start = starts.length ? starts[low] : 0;
  return { prompt: from(start), stop, dropped: start };
}

function speed(final) {
  if (!final || !final.timings) return "";
  const t = final.timings;
  return `${t.predicted_n} tokens, ${t.predicted_per_second.toFixed(1)} tokens/s` +
    ` (prompt: ${t.prompt_n} new tokens, ${t.prompt_per_second.toFixed(1)} tokens/s)`;
}

function sendMessage(text) {
  chat.turns.push({ name: "{{user}}", message: text });
  saveChat(chat);
  renderMessages();
  reply(chat);
}

// Asks for the reply to the conversation's last message. The conversation is held here, not
// read from `chat`: a reply stopped by switching conversations is kept in its own.
async function reply(conversation) {
  controller = new AbortController();
  setBusy(true);
  setStatus("");
  const messages = $("messages");
  const { element, view } = botElement();
  messages.appendChild(element);
  element.scrollIntoView({ block: "end" });
  let text = "";
  let dropped = 0;
  const finish = (info) => {
    // llamafile drops one leading space of each bot message.
    const message = text.replace(/^ /, "");
    conversation.turns.push({ name: "{{char}}", message, info, ...(dropped ? { dropped } : {}) });
    saveChat(conversation);
    view.finish(message);
    setInfo(element, info);
  };
  try {
    const prepared = await preparePrompt(conversation.turns);
    dropped = prepared.dropped;
    if (dropped) element.before(droppedNote(dropped));
    const final = await complete(prepared.prompt, prepared.stop, (piece) => {
      const follow = nearBottom();
      text += piece;
      view.update(text);
      if (follow) element.scrollIntoView({ block: "end" });
    });
    finish(speed(final));
  } catch (error) {
    if (error.name === "AbortError") {
      finish("stopped");
    } else {
      if (element.previousElementSibling?.classList.contains("note")) element.previousElementSibling.remove();
      element.remove();
      setStatus(`Error: ${error.message}`, true);
    }
  } finally {
    controller = null;
    setBusy(false);
  }
}

async function continueText() {
  const area = $("raw-text");
  controller = new AbortController();
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
    controller = null;
    setBusy(false);
  }
}

// ---- wiring ----------------------------------------------------------------------------

function setMode(mode) {
  $("chat-view").hidden = mode !== "chat";
  $("chats").hidden = mode !== "chat";
  $("completion-view").hidden = mode !== "completion";
  $("new-chat").hidden = mode !== "chat";
}

async function loadProps() {
  const response = await fetch("/props", { headers: headers() });
  if (!response.ok) throw new Error(await errorText(response));
  return response.json();
}

function addPresetButton(name, index, onClick) {
  const preset = button(name, "", onClick);
  preset.dataset.index = index;
  $("presets").appendChild(preset);
}

async function start() {
  setUpMarkdown();
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
  $("messages").addEventListener("click", (event) => {
    const copy = event.target.closest("button.copy");
    if (copy) copyCode(copy);
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
    saveSettings();
  });
  setBusy(false);

  freshChats();
  window.addEventListener("storage", (event) => {
    if (event.key === CHATS_KEY) {
      freshChats();
      renderChatList();
    }
  });
  const open = localStorage.getItem(OPEN_CHAT_KEY);
  if (chats.some((c) => c.id === open)) chat = { id: open, turns: readJson(chatKey(open), []) };
  renderMessages();
  renderChatList();

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
  $("chat-template").textContent = props.chat_template || "";
  addPresetButton("Model's template", "model", () => applyPreset(props.templates, true));
  props.presets.forEach((preset, index) => addPresetButton(preset.name, String(index), () => applyPreset(preset, false)));
  loadSettings();
  showSettings();
}

// Under node, for tests/web_templates.mjs, there is no page: the templates are all there is.
if (typeof document === "undefined") {
  module.exports = { expand, buildPrompt, stopStrings, Literal, EXPANSION_BUDGET };
} else {
  start();
}
