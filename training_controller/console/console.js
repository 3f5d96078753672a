// The training controller's console: plain JavaScript over the public REST API (/api/v1), no build step.
// The bearer token a person signs in with is kept in sessionStorage and sent on every request; event
// streams are read with fetch (EventSource cannot send a header) and resumed with Last-Event-ID.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "training-controller-token";
const main = document.getElementById("main");
let leave = []; // what the current page must stop (timers, streams) when another one is shown

// -- small helpers ---------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const svgNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const node = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(path, { method = "GET", body, raw } = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, { method, headers, body: raw ?? (body === undefined ? undefined : JSON.stringify(body)) });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    if (response.status === 401 && path !== "/trainings?limit=1") signOut("Your token was refused; sign in again.");
    throw new ApiError(response.status, data);
  }
  return data;
}

function errorBox(e) { return el("div", { class: "error", role: "alert" }, e.message || String(e)); }

function stateBadge(state) { return el("span", { class: `state ${state}`, "data-state": state }, state); }

function progressBar(progress) {
  const pct = progress ? Math.round(progress.percent) : 0;
  return el("span", {}, el("span", { class: "bar" }, el("span", { style: `width:${pct}%` })), ` ${progress ? pct + "%" : ""}`);
}

function when(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : ""; }

// -- sign in ---------------------------------------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  location.hash = "#/signin";
  if (message) setTimeout(() => showSignIn(message), 0);
}

function showSignIn(message) {
  document.getElementById("nav").hidden = true;
  const input = el("input", { type: "password", id: "token", name: "token", autocomplete: "off", placeholder: "API token", required: true });
  const status = el("div");
  if (message) status.append(errorBox(new Error(message)));
  const form = el("form", { class: "panel signin", id: "signin-form" },
    el("h1", {}, "Sign in"),
    el("p", { class: "muted" }, "Paste a token of API_TOKENS (read-only or read-write)."),
    el("div", { class: "row" }, input),
    status,
    el("button", { class: "primary", type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try {
      await api("/trainings?limit=1");
      location.hash = "#/trainings";
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      status.replaceChildren(errorBox(e));
    }
  });
  main.replaceChildren(form);
  input.focus();
}

// -- trainings -------------------------------------------------------------------------------------------

function trainingsPage() {
  const body = el("tbody");
  const status = el("div");
  const table = el("table", { id: "trainings" },
    el("thead", {}, el("tr", {}, ["Run", "State", "Phase", "Progress", "Logs", "Created", "Message"].map((h) => el("th", {}, h)))),
    body);
  main.replaceChildren(el("h1", {}, "Trainings"), status, table);
  async function refresh() {
    try {
      const page = await api("/trainings?limit=50");
      status.replaceChildren();
      body.replaceChildren(...page.items.map((t) => el("tr", { "data-run": t.runId },
        el("td", { class: "mono" }, el("a", { href: `#/trainings/${t.runId}` }, t.runId)),
        el("td", {}, stateBadge(t.state)),
        el("td", {}, t.record.phase),
        el("td", {}, progressBar(t.record.progress)),
        el("td", {}, t.record.log_count ?? ""),
        el("td", {}, when(t.record.created_at)),
        el("td", {}, t.message))));
      if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No trainings yet: start one under New training.")));
    } catch (e) {
      status.replaceChildren(errorBox(e));
    }
  }
  refresh();
  const timer = setInterval(refresh, 2000);
  leave.push(() => clearInterval(timer));
}

// Server-Sent Events over fetch, resumed after a dropped connection with Last-Event-ID.
function followEvents(runId, onEvent, onEnd) {
  let lastId = null;
  let stopped = false;
  const controller = new AbortController();
  async function connect() {
    const headers = { Authorization: `Bearer ${token()}` };
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const response = await fetch(`${API}/trainings/${runId}/events`, { headers, signal: controller.signal });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message", data = "", id = null;
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "id") id = text;
          else if (field === "event") event = text;
          else if (field === "data") data += (data ? "\n" : "") + text;
        }
        if (id !== null) lastId = id; // an id alone moves the position on without an event
        if (!data) continue;
        if (event === "end") { onEnd(JSON.parse(data)); return true; }
        onEvent(event, JSON.parse(data));
      }
    }
  }
  (async () => {
    while (!stopped) {
      try {
        if (await connect()) return;
      } catch (e) {
        if (stopped) return;
        if (e instanceof ApiError && e.status < 500) { onEnd(null, e); return; }
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  return () => { stopped = true; controller.abort(); };
}

function lossCurve(points) {
  const W = 800, H = 240, L = 50, R = 16, T = 16, B = 30;
  const root = svg("svg", { class: "curve", id: "loss-curve", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": "loss curve" });
  root.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }), svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  if (!points.length) {
    const t = svg("text", { x: W / 2 - 60, y: H / 2 }); t.textContent = "no progress reported yet"; root.append(t);
    return root;
  }
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys, 0), y1 = Math.max(...ys, y0 + 1e-6);
  const px = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const py = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  root.append(svg("polyline", { points: points.map((p) => `${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(" ") }));
  for (const p of points) root.append(svg("circle", { class: "point", cx: px(p.x).toFixed(1), cy: py(p.y).toFixed(1), r: 3, "data-loss": p.y }));
  for (const [y, label] of [[y1, y1.toFixed(2)], [y0, y0.toFixed(2)]]) {
    const t = svg("text", { x: 6, y: py(y) + 4 }); t.textContent = label; root.append(t);
  }
  const t = svg("text", { x: W - R - 60, y: H - 8 }); t.textContent = `step ${x1}`; root.append(t);
  return root;
}

function trainingPage(runId) {
  const status = el("div");
  const details = el("dl", { id: "details" });
  const state = el("span");
  const cancel = el("button", { class: "secondary", type: "button", id: "cancel" }, "Cancel");
  const log = el("div", { class: "log", id: "log" });
  const curveBox = el("div", { id: "curve" }, lossCurve([]));
  const points = [];
  main.replaceChildren(
    el("h1", {}, "Training ", el("span", { class: "mono" }, runId), " ", state),
    status,
    el("div", { class: "grid" },
      el("div", { class: "panel" }, details, el("p", {}, cancel)),
      el("div", {}, el("h2", {}, "Loss"), curveBox)),
    el("h2", {}, "Log"), log);

  async function refresh() {
    try {
      const t = await api(`/trainings/${runId}`);
      const r = t.record;
      state.replaceChildren(stateBadge(t.state));
      cancel.disabled = ["completed", "failed", "cancelled"].includes(t.state);
      const rows = [
        ["phase", r.phase], ["message", t.message], ["queue position", t.queue_position ?? ""],
        ["progress", r.progress ? `epoch ${r.progress.epoch}/${r.progress.epochs}, step ${r.progress.step}/${r.progress.steps}, loss ${r.progress.loss.toFixed(4)}` : ""],
        ["log documents", r.log_count ?? ""], ["data hash", r.train_data_version_hash ?? ""],
        ["parameters", r.parameters ? JSON.stringify(r.parameters) : ""],
        ["model", r.artifacts ? `${r.artifacts.bucket}/${r.artifacts.model}` : ""],
        ["requested by", r.requested_by], ["created", when(r.created_at)], ["finished", when(r.finished_at)],
      ];
      details.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
    } catch (e) {
      status.replaceChildren(errorBox(e));
    }
  }
  cancel.addEventListener("click", async () => {
    try { await api(`/trainings/${runId}`, { method: "DELETE" }); refresh(); } catch (e) { status.replaceChildren(errorBox(e)); }
  });

  function line(cls, text, replay) {
    log.append(el("div", { class: `${cls}${replay ? " replay" : ""}` }, text));
    log.scrollTop = log.scrollHeight;
  }
  const stop = followEvents(runId, (event, data) => {
    const at = data.at ? when(data.at).slice(11) + "  " : "";
    if (event === "phase") { line("phase", `${at}[${data.phase}] ${data.message}`, data.replay); refresh(); }
    else if (event === "progress") {
      const p = data.event;
      points.push({ x: p.step, y: p.loss });
      curveBox.replaceChildren(lossCurve(points));
      line("trainer", `${at}epoch ${p.epoch}/${p.epochs} step ${p.step}/${p.steps} loss ${p.loss.toFixed(4)} ${p.percent.toFixed(0)}%`, data.replay);
    } else if (event === "trainer") line("trainer", `${at}trainer ${data.event.event}: ${data.event.message || data.event.stage || ""}`);
    else if (event === "log") line("", `${at}${data.line}`);
  }, (end, error) => {
    if (error) status.replaceChildren(errorBox(error));
    else line("phase", `— the training has ended (${end.phase})`);
    refresh();
  });
  leave.push(stop);
  refresh();
}

// -- a new training ----------------------------------------------------------------------------------------

function toNanoseconds(value) {
  // A datetime-local value, read as UTC, to nanoseconds as a string (beyond JavaScript's safe integers).
  const ms = Date.parse(value.length === 16 ? `${value}:00Z` : `${value}Z`);
  if (Number.isNaN(ms)) throw new Error(`not a date and time: ${value}`);
  return (BigInt(ms) * 1000000n).toString();
}

function newTrainingPage() {
  const status = el("div");
  const mode = el("select", { id: "mode", name: "mode" }, el("option", { value: "time" }, "Time range"), el("option", { value: "workloads" }, "Workloads"));
  const start = el("input", { type: "datetime-local", id: "start", name: "start", step: 1 });
  const end = el("input", { type: "datetime-local", id: "end", name: "end", step: 1 });
  const workloads = el("textarea", { id: "workloads", name: "workloads", rows: 4, placeholder: '{"cluster-1": {"default": ["nginx"]}}' });
  const parameters = el("textarea", { id: "parameters", name: "parameters", rows: 3, placeholder: '{"epochs": 3}' });
  const modelType = el("select", { id: "model-type", name: "modelType" }, el("option", { value: "nulog" }, "nulog"));
  const timeRow = el("div", { class: "row" }, el("label", {}, "From (UTC)", start), el("label", {}, "To (UTC)", end));
  const workloadRow = el("div", { hidden: true }, el("label", {}, "Workloads: cluster → namespace → deployments (JSON)", workloads));
  mode.addEventListener("change", () => { timeRow.hidden = mode.value !== "time"; workloadRow.hidden = mode.value !== "workloads"; });
  const form = el("form", { class: "panel", id: "new-training" },
    el("div", { class: "row" }, el("label", {}, "Model type", modelType), el("label", {}, "Logs of", mode)),
    timeRow, workloadRow,
    el("label", {}, "Parameters (JSON, optional)", parameters),
    status,
    el("p", {}, el("button", { class: "primary", type: "submit", id: "start-training" }, "Start training")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const parts = [`"modelType":${JSON.stringify(modelType.value)}`];
      if (mode.value === "time") {
        parts.push(`"time_intervals":[{"start_ts":${toNanoseconds(start.value)},"end_ts":${toNanoseconds(end.value)}}]`);
      } else {
        parts.push(`"workloads":${JSON.stringify(JSON.parse(workloads.value || "{}"))}`);
      }
      if (parameters.value.trim()) parts.push(`"parameters":${JSON.stringify(JSON.parse(parameters.value))}`);
      const created = await api("/trainings", { method: "POST", raw: `{${parts.join(",")}}`, body: null });
      location.hash = `#/trainings/${created.runId}`;
    } catch (e) {
      status.replaceChildren(errorBox(e));
    }
  });
  main.replaceChildren(el("h1", {}, "New training"), form);
}

// -- models ----------------------------------------------------------------------------------------------

function modelsPage() {
  const status = el("div");
  const body = el("tbody");
  main.replaceChildren(el("h1", {}, "Models"), status,
    el("table", { id: "models" },
      el("thead", {}, el("tr", {}, ["Trained by", "Trained at", "Logs", "Final loss", "Held-out score", "Steps", "Data hash", ""].map((h) => el("th", {}, h)))),
      body));
  async function refresh() {
    try {
      const list = await api("/models");
      status.replaceChildren();
      body.replaceChildren(...list.models.map((m) => {
        const action = m.current ? el("span", { class: "badge" }, "current")
          : el("button", { class: "secondary", type: "button", disabled: !m.available, "data-promote": m.job_id, onclick: async () => {
            try { await api(`/models/${m.job_id}/promote`, { method: "POST" }); status.replaceChildren(el("p", { class: "notice" }, `Model of ${m.job_id} is current again.`)); refresh(); } catch (e) { status.replaceChildren(errorBox(e)); }
          } }, "Promote");
        const loss = m.metrics.final_loss;
        return el("tr", { "data-model": m.job_id },
          el("td", { class: "mono" }, el("a", { href: `#/trainings/${m.job_id}` }, m.job_id)),
          el("td", {}, when(m.trained_at)), el("td", {}, m.log_count ?? ""),
          el("td", {}, typeof loss === "number" ? loss.toFixed(4) : ""),
          el("td", {}, m.held_out_score ?? "—"), el("td", {}, m.metrics.steps ?? ""),
          el("td", { class: "mono" }, (m.train_data_version_hash || "").slice(0, 12)), el("td", {}, action));
      }));
      if (!list.models.length) body.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No model trained yet.")));
    } catch (e) {
      status.replaceChildren(errorBox(e));
    }
  }
  refresh();
}

// -- try it ----------------------------------------------------------------------------------------------

function templateNode(template) {
  const node = el("span", { class: "template mono" });
  for (const part of template.split(/(<\*>)/)) node.append(part === "<*>" ? el("span", { class: "var" }, part) : part);
  return node;
}

function tryPage() {
  const status = el("div");
  const input = el("textarea", { id: "lines", rows: 8, placeholder: "Paste log lines, one per line" });
  const results = el("div", { id: "results" });
  const button = el("button", { class: "primary", type: "submit", id: "parse" }, "Parse and score");
  const form = el("form", { class: "panel" }, el("label", {}, "Log lines", input), status, el("p", {}, button));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const logs = input.value.split("\n").filter((l) => l.trim());
    if (!logs.length) return;
    button.disabled = true;
    status.replaceChildren(el("p", { class: "muted" }, "asking the inference worker…"));
    try {
      const reply = await api("/predict", { method: "POST", body: { logs } });
      status.replaceChildren(el("p", { class: "muted" }, `model of ${reply.model.job_id ?? "an unnamed job"} (sha256 ${reply.model.sha256.slice(0, 12)})`));
      results.replaceChildren(el("table", { id: "predictions" },
        el("thead", {}, el("tr", {}, ["Log", "Template", "Score", "Label"].map((h) => el("th", {}, h)))),
        el("tbody", {}, reply.predictions.map((p) => el("tr", { class: p.label === "Anomaly" ? "anomaly" : "" },
          el("td", { class: "mono" }, p.log), el("td", {}, templateNode(p.template)),
          el("td", {}, el("span", { class: "score" }, el("span", { style: `width:${Math.round(p.score * 100)}%` })), p.score.toFixed(2)),
          el("td", { class: `label-${p.label}` }, p.label))))));
    } catch (e) {
      status.replaceChildren(errorBox(e));
    } finally {
      button.disabled = false;
    }
  });
  main.replaceChildren(el("h1", {}, "Try it"), el("p", { class: "muted" }, "Lines are masked as the training data was, then parsed and scored by the current model."), form, results);
}

// -- routing ---------------------------------------------------------------------------------------------

function route() {
  for (const stop of leave) stop();
  leave = [];
  if (!token()) return showSignIn();
  const [, page, id] = (location.hash || "#/trainings").split("/");
  document.getElementById("nav").hidden = false;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  if (page === "trainings" && id) return trainingPage(decodeURIComponent(id));
  if (page === "new") return newTrainingPage();
  if (page === "models") return modelsPage();
  if (page === "try") return tryPage();
  if (page === "signin") return showSignIn();
  return trainingsPage();
}

document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
route();
