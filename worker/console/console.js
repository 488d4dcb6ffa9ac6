// The recordsync console: reads the admin API with the operator's token and renders
// what it answers. Every value is put in the page as text, never as markup. Buttons
// call the same routes the CLI's admin counterparts do; the API checks the role.
"use strict";

const KEY = "recordsync-token";
const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem(KEY) || "";
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!resp.ok) {
    const why = json && json.error ? json.error.message : text || resp.statusText;
    throw new Error(method + " " + path + ": " + resp.status + " " + why);
  }
  return json;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function show(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// A table of `rows` with `columns` ([title, row => value]) and optional actions.
function table(columns, rows, actions) {
  if (!rows || rows.length === 0) return el("p", "Nothing.", "good");
  const t = el("table");
  const head = el("tr");
  for (const [title] of columns) head.appendChild(el("th", title));
  if (actions) head.appendChild(el("th", ""));
  t.appendChild(head);
  for (const row of rows) {
    const tr = el("tr");
    for (const [, get] of columns) tr.appendChild(el("td", show(get(row))));
    if (actions) {
      const td = el("td");
      for (const [label, act] of actions) {
        const b = el("button", label);
        b.addEventListener("click", () => act(row).then(refresh, report));
        td.appendChild(b);
      }
      tr.appendChild(td);
    }
    t.appendChild(tr);
  }
  return t;
}

function put(section, node) {
  const body = $(section).querySelector(".body");
  body.replaceChildren(node);
}

function report(err) {
  $("status").textContent = err.message;
  $("status").className = "bad";
}

const views = {
  async ledger() {
    const l = await api("GET", "/ledger");
    const node = el("div");
    node.appendChild(el("p", l.balanced ? "Balanced." : "Not balanced: events were seen and then lost.", l.balanced ? "good" : "bad"));
    node.appendChild(table([
      ["rule", (r) => r.rule], ["accepted", (r) => r.accepted], ["synced", (r) => r.synced],
      ["skipped", (r) => r.skipped], ["conflicts", (r) => r.conflicts],
      ["dead-lettered", (r) => r.dead_lettered], ["parked", (r) => r.parked],
      ["in flight", (r) => r.in_flight], ["unaccounted", (r) => r.unaccounted],
    ], l.rules));
    return node;
  },
  async conflicts() {
    const c = await api("GET", "/conflicts?status=open");
    return table([
      ["id", (r) => r.id], ["rule", (r) => r.rule], ["record", (r) => r.source_record_id],
      ["kind", (r) => r.kind], ["what", (r) => r.summary], ["seen", (r) => r.occurrences],
      ["opened", (r) => r.opened_at],
    ], c.conflicts, [["Dismiss", (r) => api("POST", "/conflicts/" + encodeURIComponent(r.id) + "/dismiss", {})]]);
  },
  async dead() {
    const d = await api("GET", "/dead-letters");
    const open = (d.dead_letters || []).filter((x) => x.status === "dead");
    return table([
      ["id", (r) => r.id], ["rule", (r) => r.rule], ["record", (r) => r.record_id],
      ["class", (r) => r.class], ["reason", (r) => r.reason], ["attempts", (r) => r.attempts],
      ["dead since", (r) => r.dead_at],
    ], open, [["Replay", (r) => api("POST", "/dead-letters/replay", { ids: [r.id] })]]);
  },
  async paused() {
    const p = await api("GET", "/paused");
    const node = el("div");
    node.appendChild(table([["scope", (r) => r.scope], ["name", (r) => r.name]], p.paused,
      [["Resume", (r) => api("POST", "/resume", { scope: r.scope, name: r.name })]]));
    node.appendChild(el("p", (p.parked || []).length + " record(s) parked."));
    return node;
  },
  async schema() {
    const s = await api("GET", "/schema-check");
    return table([
      ["system", (r) => r.system], ["app", (r) => r.app], ["checked", (r) => r.checked_at],
      ["breaking", (r) => r.breaking], ["drift", (r) => (r.drift || []).map((d) => d.rule + ": " + d.field + " " + d.kind).join("; ")],
      ["paused", (r) => (r.paused || []).join(", ")], ["not checked", (r) => r.not_checked],
    ], s.checks);
  },
  async budget() {
    const b = await api("GET", "/budget");
    return table([
      ["system", (r) => r.system], ["budget", (r) => r.budget], ["used today", (r) => r.used_today],
      ["forecast", (r) => r.forecast], ["background", (r) => r.background.state === "go" ? "goes on" : r.background.reason],
    ], b.budgets);
  },
  async resync() {
    const r = await api("GET", "/resync");
    return table([["rule", (x) => x.rule], ["cursor", (x) => x]], r.resync);
  },
  async reconcile() {
    const r = await api("GET", "/reconcile");
    return table([
      ["run", (x) => x.id], ["rule", (x) => x.rule], ["started", (x) => x.started_at],
      ["dry run", (x) => x.dry_run], ["summary", (x) => x.summary],
    ], r.runs);
  },
  async imports() {
    const i = await api("GET", "/import");
    return table([
      ["id", (x) => x.id], ["rule", (x) => x.rule], ["file", (x) => x.file],
      ["records", (x) => x.records], ["queued", (x) => x.queued], ["finished", (x) => x.finished_at],
    ], i.imports);
  },
};

async function refresh() {
  $("status").textContent = "";
  $("status").className = "";
  $("who").textContent = token() ? "token set" : "no token: an open API only";
  for (const [section, view] of Object.entries(views)) {
    try {
      put(section, await view());
    } catch (err) {
      put(section, el("p", err.message, "bad"));
    }
  }
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("token").value.trim());
  $("token").value = "";
  refresh();
});
$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  refresh();
});
refresh();
setInterval(refresh, 15000);
