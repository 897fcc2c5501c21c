// rocketlite web console: plain JS over the JSON admin API (/api/...). No build step, no CDN.
"use strict";

const REFRESH_MS = Number(new URLSearchParams(location.search).get("refresh") || 2000);
const state = {
  tab: "topics",
  topicHistory: {},   // topic -> [{t, appended}]
  lagHistory: {},     // group -> [lag]
  rateHistory: {},    // topic -> [rate]
  selectedTopic: null,
  selectedGroup: null,
  selectedMessage: null,
  lastMessages: [],
};

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmtNum = (n) => (n ?? 0).toLocaleString("en-US");
const fmtTime = (ms) => ms ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "";

function toast(text, error = false) {
  const el = $("#toast");
  el.textContent = text;
  el.className = "toast" + (error ? " error" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.add("hidden"), 3500);
}

async function api(method, path, body) {
  const headers = {"Accept": "application/json"};
  const token = localStorage.getItem("rocketlite-token");
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (resp.status === 401) { askToken(); throw new Error("admin token required"); }
  if (!resp.ok) throw new Error((data && data.error) || resp.statusText);
  return data;
}

function askToken() {
  const d = $("#token-dialog");
  if (!d.open) d.showModal();
}

function sparkline(values, w = 90, h = 22, color = "#1f6feb") {
  if (!values || values.length < 2) return `<svg class="spark" width="${w}" height="${h}"></svg>`;
  const max = Math.max(1, ...values);
  const step = w / (values.length - 1);
  const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`).join(" ");
  return `<svg class="spark" width="${w}" height="${h}"><polyline fill="none" stroke="${color}" stroke-width="1.6" points="${pts}"/></svg>`;
}

function lagClass(lag) { return lag === 0 ? "lag-ok" : lag < 1000 ? "lag-some" : "lag-high"; }
function push(hist, key, value, n = 40) { (hist[key] = hist[key] || []).push(value); if (hist[key].length > n) hist[key].shift(); }

// -- tabs -----------------------------------------------------------------------------------------
function showTab(name) {
  if (!document.getElementById("tab-" + name)) name = "topics";
  state.tab = name;
  document.querySelectorAll(".tab").forEach((el) => el.classList.toggle("hidden", el.id !== "tab-" + name));
  document.querySelectorAll("#tabs a").forEach((a) => a.classList.toggle("active", a.dataset.tab === name));
  refresh();
}
window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));

// -- topics ---------------------------------------------------------------------------------------
async function loadTopics() {
  const system = $("#show-system").checked;
  const data = await api("GET", "/api/topics" + (system ? "?system=true" : ""));
  const now = Date.now();
  const rows = data.topics.map((t) => {
    const hist = state.topicHistory[t.name] = state.topicHistory[t.name] || [];
    hist.push({t: now, appended: t.appended});
    while (hist.length > 2 && now - hist[0].t > 10000) hist.shift();
    const first = hist[0];
    const rate = hist.length > 1 && now > first.t ? (t.appended - first.appended) * 1000 / (now - first.t) : 0;
    push(state.rateHistory, t.name, rate);
    const sel = t.name === state.selectedTopic ? " selected" : "";
    return `<tr data-topic="${esc(t.name)}" class="${sel}">
      <td class="mono">${esc(t.name)}</td><td>${t.read_queues}/${t.write_queues}</td>
      <td>${(t.perm & 4 ? "R" : "-") + (t.perm & 2 ? "W" : "-")}</td><td>${esc(t.message_type)}</td>
      <td class="num messages">${fmtNum(t.messages)}</td><td class="num rate">${rate.toFixed(1)}</td>
      <td>${sparkline(state.rateHistory[t.name])}</td>
      <td><button class="secondary browse" data-topic="${esc(t.name)}">Browse</button></td></tr>`;
  });
  $("#topics-table tbody").innerHTML = rows.join("") || `<tr><td colspan="8" class="empty">No topics yet: create one, or just send (topics auto-create).</td></tr>`;
  $("#topic-names").innerHTML = data.topics.map((t) => `<option value="${esc(t.name)}">`).join("");
  if (state.selectedTopic) await loadTopicDetail(state.selectedTopic);
}

async function loadTopicDetail(name) {
  let t;
  try { t = await api("GET", "/api/topics/" + encodeURIComponent(name)); }
  catch (e) { state.selectedTopic = null; $("#topic-detail").classList.add("hidden"); return; }
  const maxMsgs = Math.max(1, ...t.queues.map((q) => q.max_offset - q.min_offset));
  const queues = t.queues.map((q) => `<tr><td>${q.queue_id}</td><td class="num">${fmtNum(q.min_offset)}</td>
    <td class="num">${fmtNum(q.max_offset)}</td><td><span class="bar" style="width:${Math.round(160 * (q.max_offset - q.min_offset) / maxMsgs)}px"></span></td></tr>`);
  $("#topic-detail").innerHTML = `<h3>Topic <span class="mono">${esc(t.name)}</span></h3>
    <dl class="kv"><dt>Consumer groups</dt><dd>${t.groups.map((g) => `<span class="badge">${esc(g)}</span>`).join("") || "none"}</dd>
    <dt>Attributes</dt><dd class="mono">${esc(JSON.stringify(t.attributes))}</dd></dl>
    <form id="topic-update" class="inline" style="margin:0">
      <label>queues <input id="topic-update-queues" type="number" min="1" max="1024" value="${t.write_queues}"></label>
      <button type="submit" class="secondary">Update queues</button>
      <button type="button" id="topic-delete" class="danger">Delete topic</button></form>
    <table class="grid"><thead><tr><th>Queue</th><th class="num">Min offset</th><th class="num">Max offset</th><th>Stored</th></tr></thead>
    <tbody>${queues.join("")}</tbody></table>`;
  $("#topic-detail").classList.remove("hidden");
  $("#topic-update").onsubmit = async (ev) => {
    ev.preventDefault();
    try { await api("PUT", "/api/topics/" + encodeURIComponent(name), {queues: Number($("#topic-update-queues").value)}); toast("Updated " + name); refresh(); }
    catch (e) { toast(e.message, true); }
  };
  $("#topic-delete").onclick = async () => {
    if (!confirm("Delete topic " + name + "?")) return;
    try { await api("DELETE", "/api/topics/" + encodeURIComponent(name)); state.selectedTopic = null; $("#topic-detail").classList.add("hidden"); toast("Deleted " + name); refresh(); }
    catch (e) { toast(e.message, true); }
  };
}

$("#topics-table tbody").addEventListener("click", (ev) => {
  const browse = ev.target.closest("button.browse");
  if (browse) { $("#msg-topic").value = browse.dataset.topic; $("#msg-key").value = ""; $("#msg-id").value = ""; location.hash = "messages"; searchMessages(); return; }
  const tr = ev.target.closest("tr[data-topic]");
  if (!tr) return;
  state.selectedTopic = tr.dataset.topic;
  document.querySelectorAll("#topics-table tr").forEach((r) => r.classList.toggle("selected", r === tr));
  loadTopicDetail(state.selectedTopic);
});

$("#topic-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("#topic-name").value.trim();
  try {
    await api("POST", "/api/topics", {name, queues: Number($("#topic-queues").value || 4)});
    toast("Created topic " + name);
    $("#topic-name").value = "";
    await loadTopics();
  } catch (e) { toast(e.message, true); }
});
$("#show-system").addEventListener("change", () => loadTopics());

// -- groups ---------------------------------------------------------------------------------------
async function loadGroups() {
  const data = await api("GET", "/api/groups");
  const rows = data.groups.map((g) => {
    push(state.lagHistory, g.name, g.lag);
    const sel = g.name === state.selectedGroup ? " selected" : "";
    return `<tr data-group="${esc(g.name)}" class="${sel}"><td class="mono">${esc(g.name)}</td>
      <td class="num">${g.clients}</td><td>${g.topics.map((t) => `<span class="badge">${esc(t)}</span>`).join("")}</td>
      <td class="num lag ${lagClass(g.lag)}">${fmtNum(g.lag)}</td><td>${sparkline(state.lagHistory[g.name], 90, 22, "#cf222e")}</td></tr>`;
  });
  $("#groups-table tbody").innerHTML = rows.join("") || `<tr><td colspan="5" class="empty">No consumer groups yet.</td></tr>`;
  if (state.selectedGroup) await loadGroupDetail(state.selectedGroup);
}

async function loadGroupDetail(name) {
  let g;
  try { g = await api("GET", "/api/groups/" + encodeURIComponent(name)); }
  catch (e) { state.selectedGroup = null; $("#group-detail").classList.add("hidden"); return; }
  const topics = g.topics.map((t) => {
    const rows = t.queues.map((q) => `<tr data-queue="${q.queue_id}"><td>${esc(t.topic)}</td><td>${q.queue_id}</td>
      <td class="num">${fmtNum(q.broker_offset)}</td><td class="num">${q.consumer_offset === null ? "–" : fmtNum(q.consumer_offset)}</td>
      <td class="num queue-lag ${lagClass(q.lag)}">${fmtNum(q.lag)}</td></tr>`).join("");
    return rows;
  }).join("");
  const clients = g.clients.map((c) => `<tr><td class="mono">${esc(c.client_id)}</td><td>${esc(c.protocol)}</td><td>${esc(c.consume_type)}</td>
    <td>${Object.entries(c.subscriptions).map(([t, e]) => `<span class="badge">${esc(t)}: ${esc(e)}</span>`).join("")}</td></tr>`).join("");
  const inflight = g.topics.filter((t) => t.pop_inflight).map((t) => `<span class="badge pending">${esc(t.topic)}: ${t.pop_inflight} in flight</span>`).join("");
  $("#group-detail").innerHTML = `<h3>Group <span class="mono">${esc(g.name)}</span> — total lag <span id="group-lag" class="${lagClass(g.lag)}">${fmtNum(g.lag)}</span> ${inflight}</h3>
    <div class="cols"><div><table class="grid" id="group-queues"><thead><tr><th>Topic</th><th>Queue</th><th class="num">Broker offset</th>
      <th class="num">Consumer offset</th><th class="num">Lag</th></tr></thead><tbody>${topics || `<tr><td colspan="5" class="empty">No offsets yet.</td></tr>`}</tbody></table></div>
    <div><table class="grid"><thead><tr><th>Consumer</th><th>Protocol</th><th>Type</th><th>Subscriptions</th></tr></thead>
      <tbody>${clients || `<tr><td colspan="4" class="empty">No consumer online.</td></tr>`}</tbody></table>
    <form id="offset-reset" class="inline" style="margin-top:12px">
      <select id="offset-to"><option value="latest">skip to latest</option><option value="earliest">rewind to earliest</option><option value="time">to time…</option></select>
      <input id="offset-time" type="datetime-local" class="hidden">
      <button type="submit" class="secondary">Reset offsets</button></form></div></div>`;
  $("#group-detail").classList.remove("hidden");
  $("#offset-to").onchange = () => $("#offset-time").classList.toggle("hidden", $("#offset-to").value !== "time");
  $("#offset-reset").onsubmit = async (ev) => {
    ev.preventDefault();
    const to = $("#offset-to").value;
    const body = to === "time" ? {timestamp_ms: new Date($("#offset-time").value).getTime()} : {to};
    try { await api("POST", `/api/groups/${encodeURIComponent(name)}/offsets`, body); toast("Offsets reset"); refresh(); }
    catch (e) { toast(e.message, true); }
  };
}

$("#groups-table tbody").addEventListener("click", (ev) => {
  const tr = ev.target.closest("tr[data-group]");
  if (!tr) return;
  state.selectedGroup = tr.dataset.group;
  document.querySelectorAll("#groups-table tr").forEach((r) => r.classList.toggle("selected", r === tr));
  loadGroupDetail(state.selectedGroup);
});

// -- messages -------------------------------------------------------------------------------------
async function searchMessages() {
  const topic = $("#msg-topic").value.trim(), key = $("#msg-key").value.trim(), id = $("#msg-id").value.trim();
  const q = new URLSearchParams();
  if (topic) q.set("topic", topic);
  if (key) q.set("key", key);
  if (id) q.set("id", id);
  if (!topic && !key && !id) { toast("Give a topic, a key or a message id", true); return; }
  let data;
  try { data = await api("GET", "/api/messages?" + q.toString()); } catch (e) { toast(e.message, true); return; }
  state.lastMessages = data.messages;
  const rows = data.messages.map((m, i) => `<tr data-index="${i}" data-id="${esc(m.unique_id)}">
    <td>${esc(fmtTime(m.store_timestamp))}</td><td class="mono">${esc(m.topic)}</td><td>${m.queue_id} / ${m.queue_offset}</td>
    <td>${esc(m.tags)}</td><td>${esc(m.keys)}</td><td class="mono">${esc(m.unique_id)}</td>
    <td class="mono">${m.body_text === null ? `<i>${m.body_size} bytes binary</i>` : esc(m.body_text.slice(0, 60))}</td></tr>`);
  $("#msg-results tbody").innerHTML = rows.join("") || `<tr><td colspan="7" class="empty">No message found.</td></tr>`;
  if (data.messages.length === 1) showMessage(data.messages[0]);
  else $("#msg-detail").classList.add("hidden");
}

function showMessage(m) {
  state.selectedMessage = m.unique_id;
  const props = Object.entries(m.properties).map(([k, v]) => `<dt class="mono">${esc(k)}</dt><dd class="mono">${esc(v)}</dd>`).join("");
  const delivery = m.delivery.map((d) => `<span class="badge ${d.state === "CONSUMED" ? "ok" : "pending"}">${esc(d.group)}: ${d.state}</span>`).join("") || "no consumer group yet";
  const body = m.body_text !== null ? esc(m.body_text) + (m.body_truncated ? "\n…" : "") : "base64: " + esc(m.body_base64);
  $("#msg-detail").innerHTML = `<h3>Message <span class="mono">${esc(m.unique_id)}</span></h3>
    <div class="cols"><div><dl class="kv">
      <dt>Topic</dt><dd class="mono">${esc(m.topic)}</dd><dt>Queue / offset</dt><dd>${m.queue_id} / ${m.queue_offset} (log ${m.commit_offset})</dd>
      <dt>Tags</dt><dd>${esc(m.tags)}</dd><dt>Keys</dt><dd>${esc(m.keys)}</dd>
      <dt>Born</dt><dd>${esc(fmtTime(m.born_timestamp))} ${esc(m.born_host)}</dd><dt>Stored</dt><dd>${esc(fmtTime(m.store_timestamp))}</dd>
      <dt>Reconsumed</dt><dd>${m.reconsume_times}</dd><dt>Size</dt><dd>${fmtNum(m.body_size)} bytes</dd>
      <dt>Delivery</dt><dd id="msg-delivery">${delivery}</dd></dl>
      <form id="resend-form" class="inline" style="margin:0"><input id="resend-group" placeholder="consumer group" list="group-names">
        <button type="submit" class="secondary">Resend to group</button></form></div>
    <div><b>Body</b><pre class="body" id="msg-body">${body}</pre><b>Properties</b><dl class="kv">${props}</dl></div></div>`;
  $("#msg-detail").classList.remove("hidden");
  $("#resend-form").onsubmit = async (ev) => {
    ev.preventDefault();
    try { const r = await api("POST", `/api/messages/${encodeURIComponent(m.unique_id)}/resend`, {group: $("#resend-group").value}); toast(`Resent to ${r.group} (${r.method})`); }
    catch (e) { toast(e.message, true); }
  };
}

$("#msg-form").addEventListener("submit", (ev) => { ev.preventDefault(); searchMessages(); });
$("#send-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = {topic: $("#send-topic").value.trim(), tags: $("#send-tags").value.trim(),
    keys: $("#send-keys").value.trim(), body: $("#send-body").value};
  try {
    const r = await api("POST", "/api/messages", body);
    toast(`Stored in ${r.topic} queue ${r.queue_id} at offset ${r.queue_offset}`);
    $("#msg-id").value = r.unique_id; $("#msg-key").value = ""; $("#msg-topic").value = r.topic;
    searchMessages();
  } catch (e) { toast(e.message, true); }
});
$("#msg-results tbody").addEventListener("click", (ev) => {
  const tr = ev.target.closest("tr[data-index]");
  if (!tr) return;
  document.querySelectorAll("#msg-results tr").forEach((r) => r.classList.toggle("selected", r === tr));
  showMessage(state.lastMessages[Number(tr.dataset.index)]);
});

// -- MQTT -----------------------------------------------------------------------------------------
function listTable(title, items, id) {
  if (!items.length) return `<div><h3>${title}</h3><p class="hint">none</p></div>`;
  const cols = [...new Set(items.flatMap((it) => typeof it === "object" ? Object.keys(it) : ["value"]))].slice(0, 8);
  const cell = (v) => Array.isArray(v) ? v.join(", ") : (v !== null && typeof v === "object") ? JSON.stringify(v) : v;
  const rows = items.map((it) => `<tr>${cols.map((c) => `<td class="mono">${esc(typeof it === "object" ? cell(it[c]) : it)}</td>`).join("")}</tr>`).join("");
  return `<div><h3>${title} (${items.length})</h3><table class="grid" id="${id}"><thead><tr>${cols.map((c) => `<th>${esc(c)}</th>`).join("")}</tr></thead><tbody>${rows}</tbody></table></div>`;
}

async function loadMqtt() {
  const m = await api("GET", "/api/mqtt");
  if (!m.available) {
    $("#mqtt-body").innerHTML = `<div class="placeholder" id="mqtt-placeholder">The MQTT front-end is not running in this process
      (or shares no session manager yet). MQTT clients, sessions and retained messages appear here when it does.</div>`;
    return;
  }
  $("#mqtt-body").innerHTML = `<div class="stack">${listTable("Clients", m.clients, "mqtt-clients")}
    ${listTable("Sessions", m.sessions, "mqtt-sessions")}${listTable("Retained messages", m.retained, "mqtt-retained")}</div>`;
}

// -- broker ---------------------------------------------------------------------------------------
async function loadBroker() {
  const c = await api("GET", "/api/cluster");
  const kv = (obj) => Object.entries(obj).map(([k, v]) => `<dt>${esc(k)}</dt><dd class="mono">${esc(typeof v === "object" ? JSON.stringify(v) : v)}</dd>`).join("");
  $("#broker-body").innerHTML = `<div class="cols"><div class="detail"><h3>${esc(c.broker_name)} <span class="badge">${esc(c.cluster_name)}</span></h3>
    <dl class="kv"><dt>Version</dt><dd>${esc(c.version)}</dd><dt>Uptime</dt><dd>${Math.round(c.uptime_seconds)} s</dd>
    <dt>Data</dt><dd class="mono">${esc(c.data_dir || "memory (ephemeral)")}</dd><dt>Topics</dt><dd>${c.topics}</dd><dt>Groups</dt><dd>${c.groups}</dd>
    <dt>Auto-create topics</dt><dd>${c.auto_create_topics}</dd></dl></div>
    <div class="detail"><h3>Listeners</h3><dl class="kv">${kv(c.addresses)}</dl><h3>Store</h3><dl class="kv">${kv(c.store)}</dl></div></div>
    <p class="hint">Prometheus metrics: <a href="/metrics">/metrics</a> · API description: <a href="/api/openapi.json">/api/openapi.json</a></p>`;
}

// -- refresh loop ---------------------------------------------------------------------------------
async function refresh() {
  try {
    const loaders = {topics: loadTopics, groups: loadGroups, mqtt: loadMqtt, broker: loadBroker, messages: async () => {}};
    await loaders[state.tab]();
    if (state.tab !== "groups") { const g = await api("GET", "/api/groups"); g.groups.forEach((x) => push(state.lagHistory, x.name, x.lag));
      document.getElementById("group-names") || document.body.insertAdjacentHTML("beforeend", '<datalist id="group-names"></datalist>');
      $("#group-names").innerHTML = g.groups.map((x) => `<option value="${esc(x.name)}">`).join(""); }
    $("#status-dot").className = "dot ok";
    $("#status-text").textContent = "live · " + new Date().toLocaleTimeString();
  } catch (e) {
    $("#status-dot").className = "dot bad";
    $("#status-text").textContent = e.message;
  }
}

$("#token-button").addEventListener("click", askToken);
$("#token-save").addEventListener("click", () => {
  localStorage.setItem("rocketlite-token", $("#token-input").value);
  setTimeout(refresh, 0);
});

showTab(location.hash.slice(1) || "topics");
setInterval(refresh, REFRESH_MS);
