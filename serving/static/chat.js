// The chat page: multi-turn history kept here, replies streamed over SSE from
// /v1/chat/completions, and each message annotated with the server's guard verdicts.
"use strict";
const $ = (id) => document.getElementById(id);
const history = [];
let model = "";

$("apikey").value = localStorage.getItem("d2d-api-key") || "";
$("apikey").addEventListener("change", () => localStorage.setItem("d2d-api-key", $("apikey").value));

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("apikey").value) h["Authorization"] = "Bearer " + $("apikey").value;
  return h;
}

async function loadModel() {
  const r = await fetch("/v1/models", { headers: headers() });
  if (r.ok) { model = (await r.json()).data[0].id; $("model").textContent = "model: " + model; }
  return r;
}

function bubble(cls, text) {
  const d = document.createElement("div");
  d.className = "msg " + cls;
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = text;
  d.appendChild(body);
  $("log").appendChild(d);
  $("log").scrollTop = $("log").scrollHeight;
  return d;
}

function verdictLine(stage, v) {
  if (!v) return "";
  const why = v.reasons && v.reasons.length ? " — " + v.reasons.join("; ") : "";
  const who = v.triggered && v.triggered.length ? " (" + v.triggered.join(", ") + ")" : "";
  return `<span class="badge ${v.action}">${stage}: ${v.action}</span>${escapeHtml(who + why)} ` +
         `<span class="muted">${v.latency_ms} ms</span>`;
}

function escapeHtml(s) {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}

function showVerdicts(el, g, finish) {
  let v = el.querySelector(".verdict");
  if (!v) { v = document.createElement("span"); v.className = "verdict"; el.appendChild(v); }
  if (!g || !g.enabled) { v.textContent = "guardrails off"; return; }
  v.innerHTML = [verdictLine("input", g.input), verdictLine("output", g.output)].filter(Boolean).join("<br>");
  if (finish === "content_filter") el.classList.add("blocked");
}

async function send(text) {
  if (!model) { const r = await loadModel(); if (!r.ok) return showError(r); }
  history.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant", "");
  out.classList.add("streaming");
  const body = out.querySelector(".body");
  const resp = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers(),
    body: JSON.stringify({ model, messages: history, stream: true }),
  });
  if (!resp.ok) { out.remove(); history.pop(); return showError(resp); }
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "", reply = "", finish = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const line = buf.slice(0, i).trim(); buf = buf.slice(i + 2);
      if (!line.startsWith("data: ")) continue;
      const data = line.slice(6);
      if (data === "[DONE]") continue;
      const ev = JSON.parse(data);
      if (ev.error) { bubble("error", "Error: " + ev.error.message); continue; }
      const c = ev.choices[0];
      if (c.delta.content) { reply += c.delta.content; body.textContent = reply; }
      if (c.delta.refusal && !reply.endsWith(c.delta.refusal)) { reply += (reply ? "\n" : "") + c.delta.refusal; body.textContent = reply; }
      if (ev.guardrails) showVerdicts(out, ev.guardrails, c.finish_reason);
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  out.classList.remove("streaming");
  out.dataset.finish = finish || "";
  history.push({ role: "assistant", content: reply });
}

async function showError(resp) {
  let msg = resp.status + "";
  try { msg += ": " + (await resp.json()).error.message; } catch (e) { /* non-JSON error body */ }
  bubble("error", msg);
}

$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text) return;
  $("input").value = "";
  $("send").disabled = true;
  try { await send(text); } finally { $("send").disabled = false; $("input").focus(); }
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
});
$("clear").addEventListener("click", () => { history.length = 0; $("log").innerHTML = ""; });
loadModel();
