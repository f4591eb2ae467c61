// The lmstack web UI: a chat playground on /v1/chat/completions and read-only registry views.
"use strict";

const $ = (id) => document.getElementById(id);
const conversation = [];
let controller = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: headers() });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// --- views --------------------------------------------------------------------------------------

function show(view) {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.view === view));
  document.querySelectorAll(".view").forEach((s) => { s.hidden = s.id !== `view-${view}`; });
  if (view !== "chat") loadRegistry().catch((error) => status(`registry: ${error.message}`));
}

document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => show(b.dataset.view)));

// --- chat ---------------------------------------------------------------------------------------

async function loadServer() {
  try {
    const server = await getJSON("/ui/api/server");
    $("model").replaceChildren(new Option(server.model, server.model));
    for (const name of server.adapters) $("adapter").append(new Option(name, name));
    status(`${server.model}: context ${server.max_context} tokens, ${server.max_sequences} sequences at once`);
  } catch (error) {
    status(`cannot reach the server: ${error.message}`);
  }
}

function status(text) { $("status").textContent = text; }

function addMessage(role, text) {
  const node = element("div", `message ${role}`);
  node.append(element("span", "text", text));
  $("messages").append(node);
  node.scrollIntoView({ block: "end" });
  return node;
}

function requestBody() {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...conversation);
  const body = {
    model: $("adapter").value || $("model").value,
    messages,
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    max_tokens: Number($("max-tokens").value),
    stream: $("stream").checked,
  };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  if ($("structured").checked) {
    const schema = $("schema").value.trim();
    body.response_format = schema
      ? { type: "json_schema", json_schema: { name: "answer", schema: JSON.parse(schema) } }
      : { type: "json_object" };
  }
  if (body.stream) body.stream_options = { include_usage: true };
  return body;
}

async function* events(response) {
  // Server-sent events: "data: {...}" blocks separated by a blank line, ending with [DONE].
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

async function send(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  let body;
  try {
    conversation.push({ role: "user", content: text });
    body = requestBody();
  } catch (error) {
    conversation.pop();
    status(`the JSON schema is not valid JSON: ${error.message}`);
    return;
  }
  $("prompt").value = "";
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  const started = performance.now();
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  let answer = "";
  let usage = null;
  let finish = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) {
      const error = await response.json();
      throw new Error(error.error ? error.error.message : response.statusText);
    }
    if (body.stream) {
      for await (const chunk of events(response)) {
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices) {
          answer += choice.delta.content || "";
          if (choice.finish_reason) finish = choice.finish_reason;
        }
        reply.querySelector(".text").textContent = answer;
      }
    } else {
      const result = await response.json();
      answer = result.choices[0].message.content || "";
      finish = result.choices[0].finish_reason;
      usage = result.usage;
      reply.querySelector(".text").textContent = answer;
    }
    conversation.push({ role: "assistant", content: answer });
    const seconds = (performance.now() - started) / 1000;
    const tokens = usage ? usage.completion_tokens : "?";
    reply.append(element("span", "meta", `${tokens} tokens in ${seconds.toFixed(2)} s, finish: ${finish}`));
  } catch (error) {
    conversation.pop();
    reply.classList.add("error");
    reply.querySelector(".text").textContent = error.name === "AbortError" ? `${answer} [stopped]` : error.message;
  } finally {
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

$("send-form").addEventListener("submit", send);
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("send-form").requestSubmit(); }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("reset").addEventListener("click", () => { conversation.length = 0; $("messages").replaceChildren(); });
$("structured").addEventListener("change", () => { $("schema-box").hidden = !$("structured").checked; });
$("api-key").value = localStorage.getItem("lmstack-api-key") || "";
$("api-key").addEventListener("change", () => {
  localStorage.setItem("lmstack-api-key", $("api-key").value);
  loadServer();
});

// --- registry -----------------------------------------------------------------------------------

function scoreText(score) {
  const value = Number.isInteger(score.value) ? score.value : score.value.toFixed(4);
  return `${score.metric} ${value}`;
}

function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows.map((cells) => {
    const tr = element("tr");
    for (const [text, className] of cells) tr.append(element("td", className || "", text));
    return tr;
  }));
}

function drawTree(artifacts) {
  const byId = new Map(artifacts.map((a) => [a.id, a]));
  const children = new Map();
  for (const a of artifacts) {
    for (const parent of a.parents) {
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(a);
    }
  }
  const roots = artifacts.filter((a) => !a.parents.some((p) => byId.has(p)));
  const branch = (nodes, seen) => {
    const ul = element("ul");
    for (const a of nodes) {
      const li = element("li");
      const node = element("span", "node");
      node.dataset.id = a.id;
      node.append(element("span", "kind", a.kind), element("strong", "", a.name), document.createTextNode(` ${a.id}`));
      if (a.scores.length) node.append(element("span", "scores", a.scores.map(scoreText).join(", ")));
      li.append(node);
      const kids = (children.get(a.id) || []).filter((c) => !seen.has(c.id));
      if (kids.length) li.append(branch(kids, new Set([...seen, a.id])));
      ul.append(li);
    }
    return ul;
  };
  $("tree").replaceChildren(roots.length ? branch(roots, new Set()) : element("p", "muted", "The registry is empty."));
}

async function loadRegistry() {
  const { database, artifacts } = await getJSON("/ui/api/registry");
  $("registry-path").textContent = `${artifacts.length} artifacts in ${database}`;
  fillTable("models-table", artifacts.map((a) => [
    [a.id], [a.kind], [a.name], [a.operation], [a.parents.join(", ")], [a.created_at], [a.path, "path"],
  ]));
  fillTable("scores-table", artifacts.flatMap((a) => a.scores.map((s) => [
    [a.id], [a.name], [s.metric], [String(s.value)], [s.dataset || ""], [s.created_at],
  ])));
  drawTree(artifacts);
}

loadServer();
