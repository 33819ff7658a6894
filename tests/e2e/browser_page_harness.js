// Runs the <script> of examples/browser.html under Node, against a real gateway.
//
//   node [--experimental-websocket] browser_page_harness.js PAGE URL PLAN_JSON
//
// The page's own code runs unchanged; only the DOM is replaced by the few elements it
// uses, and WebSocket is Node's built-in WHATWG WebSocket (the browser API, from undici).
// The harness then uses the page as a person would: it types each message into the input,
// submits the form and reads the echoes from the log list. PLAN_JSON:
//   {"messages": [...], "oversize": N, "after": "...", "timeout_ms": T}
// With "oversize", it also sends N bytes (over the 1 MiB limit), waits for the close 1009
// and the page's reconnect, then sends "after". Prints {"echoes": [...], "statuses": [...]}.
"use strict";

const fs = require("node:fs");
const vm = require("node:vm");

const [pagePath, url, planJson] = process.argv.slice(2);
const plan = JSON.parse(planJson);

class FakeElement {
  constructor(tag) {
    this.tag = tag;
    this.children = [];
    this.listeners = {};
    this.history = []; // every textContent the page wrote, in order
    this.value = "";
    this.className = "";
    this._text = "";
  }
  get textContent() {
    return this._text;
  }
  set textContent(text) {
    this._text = String(text);
    this.history.push(this._text);
  }
  append(...children) {
    this.children.push(...children);
  }
  addEventListener(type, listener) {
    (this.listeners[type] ||= []).push(listener);
  }
  dispatch(type, event) {
    for (const listener of this.listeners[type] || []) listener(event);
  }
}

const elements = new Map();
function byId(id) {
  if (!elements.has(id)) elements.set(id, new FakeElement(id));
  return elements.get(id);
}

const html = fs.readFileSync(pagePath, "utf8");
const scripts = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)];
if (scripts.length !== 1) throw new Error(`expected one inline <script>, found ${scripts.length}`);

const page = vm.createContext({
  document: { getElementById: byId, createElement: (tag) => new FakeElement(tag) },
  location: new URL(`file:///browser.html?url=${encodeURIComponent(url)}`),
  URLSearchParams,
  WebSocket,
  setTimeout,
  console,
});
vm.runInContext(scripts[0][1], page, { filename: pagePath });

const status = byId("status");
const log = byId("log");
const echoes = () => log.children.filter((c) => c.className === "echo").map((c) => c.textContent);
const report = () => JSON.stringify({ echoes: echoes(), statuses: status.history });

function waitFor(what, condition) {
  const deadline = Date.now() + plan.timeout_ms;
  return new Promise((resolve, reject) => {
    const poll = () => {
      if (condition()) resolve();
      else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(poll, 10);
    };
    poll();
  });
}

function type(text) {
  byId("message").value = text;
  byId("send-form").dispatch("submit", { preventDefault() {} });
}

const connected = () => status.textContent.startsWith("connected");

(async () => {
  await waitFor("the page to connect", connected);
  for (const [i, message] of plan.messages.entries()) {
    type(message);
    await waitFor(`echo #${i + 1}`, () => echoes().length === i + 1);
  }
  if (plan.oversize) {
    type("x".repeat(plan.oversize));
    const closed = () => status.history.findIndex((s) => s.startsWith("closed (1009"));
    await waitFor("close 1009 (message too big)", () => closed() >= 0);
    await waitFor("the page to reconnect", () => connected());
    type(plan.after);
    await waitFor("the echo after reconnecting", () => echoes().length === plan.messages.length + 1);
  }
  // Exit only once the report is written: a pipe is written asynchronously, and the
  // page's open WebSocket would keep Node running forever.
  process.stdout.write(`${report()}\n`, () => process.exit(0));
})().catch((error) => {
  process.stderr.write(`${error.message}\n${report()}\n`, () => process.exit(1));
});
