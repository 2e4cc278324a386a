// The TaskFlux console: one page, refreshed every 2 s, talking to the documented /api/v1 routes of the node that
// serves it. A follower's console moves to the leader's; when the node goes away the console asks the other
// members (GET /api/v1/cluster is readable from any origin) who leads now and moves there.
"use strict";

const REFRESH_MS = 2000;
const PEEK_LIMIT = 20;
const state = { route: null, cluster: null, members: [], hex: false, timer: null, busy: false };

// --- small helpers ---------------------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "className") element.className = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function svg(tag, attrs, ...children) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

const queuePath = (name, suffix = "") => `/api/v1/queues/${encodeURIComponent(name)}${suffix}`;
const queueLink = (name) => `#/queue/${encodeURIComponent(name)}`;
const shown = (name) => (name === "" ? '"" (default)' : name);

class ConsoleError extends Error {
  constructor(message, unreachable = false) { super(message); this.unreachable = unreachable; }
}

function describe(status, error) {
  if (status === 421) return `this node is a follower: the leader is node ${error.leader_id} (${error.leader || "address unknown"})`;
  if (error.reason === "no_leader") return "no leader is known: an election is under way, or a majority of the nodes is down";
  if (status === 422) return `refused by a queue policy: ${error.message}`;
  if (status === 504) return `outcome unknown: ${error.message}`;
  if (error.reason === "stopping") return "this node is stopping: nothing was done";
  return error.message || `the node answered ${status}`;
}

async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (failure) {
    throw new ConsoleError("this node does not answer", true);
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  const error = (data && data.error) || {};
  if (response.status === 421 && error.leader) followLeader(error.leader);
  throw new ConsoleError(describe(response.status, error));
}

function followLeader(address) {
  if (address && address !== location.host) location.replace(`${location.protocol}//${address}/ui/${location.hash}`);
}

async function findLeader() {
  // This node went away: ask the other members who leads now.
  for (const address of state.members) {
    if (address === location.host) continue;
    try {
      const response = await fetch(`${location.protocol}//${address}/api/v1/cluster`);
      const view = await response.json();
      if (view.role === "leader") return followLeader(address);
      const leader = view.nodes.find((node) => node.id === view.leader_id);
      if (leader && leader.http_address && leader.http_address !== location.host) return followLeader(leader.http_address);
    } catch (failure) { /* that one is gone too */ }
  }
}

function problem(message) {
  const box = document.getElementById("problem");
  box.hidden = !message;
  box.textContent = message || "";
}

function sparkline(series, width, height) {
  const steps = Math.max(...series.map((values) => values.length), 2);
  const top = Math.max(1, ...series.flat());
  const paths = series.map((values, which) => {
    const points = values.map((value, i) => {
      const x = ((i + steps - values.length) / (steps - 1)) * (width - 2) + 1;
      const y = height - 1 - (value / top) * (height - 2);
      return `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    });
    return svg("path", { d: points.join(" ") || `M1,${height - 1}`, class: which ? "out" : "in" });
  });
  return svg("svg", { class: "spark", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                      "aria-label": `enqueued and dequeued per ${series.length} step(s)` }, ...paths);
}

function perMinute(values, interval) {
  const recent = values.slice(-Math.round(60 / interval));
  return recent.reduce((sum, value) => sum + value, 0);
}

function policyTags(policies) {
  const tags = [];
  if (policies.max_queue_size !== null) tags.push(`max ${policies.max_queue_size}`);
  if (policies.max_payload_size !== null) tags.push(`payload ≤ ${policies.max_payload_size} B`);
  if (policies.priority_range) tags.push(`priorities ${policies.priority_range[0]}…${policies.priority_range[1]}`);
  if (policies.max_deliveries !== null) tags.push(`${policies.max_deliveries} deliveries → ${shown(policies.dead_letter_queue)}`);
  if (policies.retry_delay_ms) tags.push(`retry after ${policies.retry_delay_ms / 1000} s${policies.retry_backoff === "exponential" ? " ×2" : ""}`);
  return tags.map((tag) => h("span", { className: "tag" }, tag));
}

function payloadText(record) {
  if (!state.hex && record.payload !== null) return record.payload;
  const bytes = atob(record.payload_base64);
  return Array.from(bytes, (c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join(" ");
}

// --- the header: which node, which role ------------------------------------------------------------------------

function showStatus() {
  const view = state.cluster;
  const status = document.getElementById("status");
  if (!view) { status.textContent = "connecting…"; return; }
  const leader = view.leader_id === null ? "no leader" : `leader: node ${view.leader_id}`;
  status.textContent = `node ${view.node_id} · ${view.role} · term ${view.term} · ${leader}`;
  for (const id of ["nav-queues", "nav-cluster"]) document.getElementById(id).classList.remove("active");
  document.getElementById(state.route.name === "cluster" ? "nav-cluster" : "nav-queues").classList.add("active");
}

// --- views: each builds its skeleton once (forms keep what the user typed) and refreshes its data ----------------

const views = {
  queues: {
    build(root) {
      const dead = h("select", { name: "dead_letter_queue" }, h("option", { value: "" }, "none"));
      const form = h("form", { id: "create-form", onsubmit: createQueue },
        h("label", {}, "name", h("input", { name: "name", required: true, placeholder: "jobs" })),
        h("label", {}, "structure", h("select", { name: "implementation" }, h("option", {}, "H4"), h("option", {}, "QA"))),
        h("label", {}, "max records", h("input", { name: "max_queue_size", type: "number", min: 0 })),
        h("label", {}, "max deliveries", h("input", { name: "max_deliveries", type: "number", min: 1 })),
        h("label", {}, "dead-letter queue", dead),
        h("label", {}, "retry delay (s)", h("input", { name: "retry_delay", type: "number", min: 0, step: "any" })),
        h("button", { type: "submit" }, "Create queue"));
      root.append(h("h1", {}, "Queues"), h("div", { className: "card", id: "queue-table" }, "loading…"),
                  h("h2", {}, "Create a queue"), h("div", { className: "card" }, form,
                    h("div", { className: "result note", id: "create-result" })));
    },
    async refresh() {
      const { queues } = await api("GET", "/api/v1/queues");
      const byName = new Map(queues.map((queue) => [queue.name, queue]));
      const deadLetterQueues = new Set(queues.map((q) => q.policies.dead_letter_queue).filter((n) => n !== null));
      const ordered = [];
      for (const queue of queues) {
        if (deadLetterQueues.has(queue.name)) continue;
        ordered.push([queue, false]);
        const dead = byName.get(queue.policies.dead_letter_queue);
        if (dead && !ordered.some(([q]) => q === dead)) ordered.push([dead, true]);
      }
      for (const queue of queues) if (!ordered.some(([q]) => q === queue)) ordered.push([queue, true]);
      const rows = ordered.map(([queue, dead]) => h("tr", { className: dead ? "dead" : "", "data-queue": queue.name },
        h("td", {}, dead ? h("span", { className: "tag dead" }, "dead letters") : null, h("a", { href: queueLink(queue.name) }, shown(queue.name))),
        h("td", { className: "num ready" }, queue.count), h("td", { className: "num" }, queue.delayed),
        h("td", { className: "num" }, queue.reserved), h("td", { className: "wide" }, policyTags(queue.policies)),
        h("td", {}, queue.rates ? sparkline([queue.rates.enqueued, queue.rates.dequeued], 120, 28) : "")));
      const table = h("table", {}, h("tr", {}, h("th", {}, "queue"), h("th", {}, "ready"), h("th", {}, "delayed"),
        h("th", {}, "handed out"), h("th", { className: "wide" }, "policies"),
        h("th", {}, h("span", { className: "legend" }, "last 10 min: ", h("span", { className: "in" }, "in"), " / ", h("span", { className: "out" }, "out")))), rows);
      document.getElementById("queue-table").replaceChildren(table);
      const select = document.querySelector("#create-form select[name=dead_letter_queue]");
      const chosen = select.value;
      select.replaceChildren(h("option", { value: "" }, "none"), ...queues.map((q) => h("option", { value: q.name }, shown(q.name))));
      select.value = chosen;
    },
  },

  queue: {
    build(root, name) {
      root.append(
        h("h1", {}, "Queue ", shown(name)),
        h("div", { className: "card", id: "queue-stats" }, "loading…"),
        h("h2", {}, "Next records"),
        h("div", { className: "card" },
          h("label", { className: "inline" }, h("input", { type: "checkbox", id: "hex", checked: state.hex || null,
            onchange: (event) => { state.hex = event.target.checked; refreshNow(); } }), "payloads in hex"),
          h("div", { id: "peek" }, "loading…")),
        h("h2", {}, "Enqueue, take, move"),
        h("div", { className: "card" },
          h("form", { id: "enqueue-form", onsubmit: (event) => enqueue(event, name) },
            h("label", {}, "priority", h("input", { name: "priority", type: "number", value: "0", required: true })),
            h("label", {}, "payload", h("textarea", { name: "payload" })),
            h("label", {}, "delay (s)", h("input", { name: "delay", type: "number", min: 0, step: "any" })),
            h("button", { type: "submit" }, "Enqueue")),
          h("p", {}),
          h("form", { onsubmit: (event) => { event.preventDefault(); take(name); } },
            h("button", { type: "submit", className: "secondary", id: "take" }, "Take one (removed for good)"),
            h("button", { type: "button", className: "secondary", id: "redrive", onclick: () => redrive(name) },
              "Move dead letters back to their queues"),
            h("button", { type: "button", className: "danger", id: "delete", onclick: () => deleteQueue(name) }, "Delete queue")),
          h("div", { className: "result note", id: "queue-result" })));
    },
    async refresh(name) {
      const [queue, peek] = await Promise.all([api("GET", queuePath(name)), api("GET", queuePath(name, `/records?limit=${PEEK_LIMIT}`))]);
      const rates = queue.rates || { interval_seconds: 10, enqueued: [], dequeued: [] };
      document.getElementById("queue-stats").replaceChildren(
        h("div", { className: "stats" },
          h("div", { className: "stat" }, h("b", { id: "stat-ready" }, queue.count), "ready"),
          h("div", { className: "stat" }, h("b", {}, queue.delayed), "delayed"),
          h("div", { className: "stat" }, h("b", {}, queue.reserved), "handed out"),
          h("div", { className: "stat" }, h("b", {}, perMinute(rates.enqueued, rates.interval_seconds)), "in, last minute"),
          h("div", { className: "stat" }, h("b", {}, perMinute(rates.dequeued, rates.interval_seconds)), "out, last minute")),
        h("p", {}, queue.implementation, " ", policyTags(queue.policies)),
        sparkline([rates.enqueued, rates.dequeued], 600, 90),
        h("div", { className: "legend" }, rates.enqueued.length
          ? `the last ${Math.round((rates.enqueued.length * rates.interval_seconds) / 60)} min, per ${rates.interval_seconds} s: `
          : `no history yet (a step every ${rates.interval_seconds} s): `,
          h("span", { className: "in" }, "enqueued"), " / ", h("span", { className: "out" }, "dequeued")));
      const rows = peek.records.map((record) => h("tr", {},
        h("td", { className: "num" }, record.id), h("td", { className: "num" }, record.priority),
        h("td", { className: "payload" }, payloadText(record)),
        h("td", { className: "num" }, record.failed_deliveries),
        h("td", { className: "wide" }, record.origin ? `${shown(record.origin.queue)} #${record.origin.id}` : "")));
      document.getElementById("peek").replaceChildren(rows.length
        ? h("table", {}, h("tr", {}, h("th", {}, "id"), h("th", {}, "priority"), h("th", {}, "payload"), h("th", {}, "failed"),
            h("th", { className: "wide" }, "came from")), rows)
        : h("p", { className: "note" }, "no ready record"));
    },
  },

  cluster: {
    build(root) {
      root.append(h("h1", {}, "Cluster"), h("div", { className: "card", id: "cluster-facts" }, "loading…"),
                  h("h2", {}, "Nodes"), h("div", { className: "card", id: "cluster-nodes" }, "loading…"));
    },
    async refresh() {
      const view = state.cluster;
      document.getElementById("cluster-facts").replaceChildren(h("div", { className: "stats" },
        h("div", { className: "stat" }, h("b", {}, view.leader_id === null ? "none" : `node ${view.leader_id}`), "leader"),
        h("div", { className: "stat" }, h("b", {}, view.term), "term"),
        h("div", { className: "stat" }, h("b", {}, view.commit_index), "committed"),
        h("div", { className: "stat" }, h("b", {}, view.applied_index), "applied"),
        h("div", { className: "stat" }, h("b", {}, view.leader_changes), "leader changes seen")));
      const rows = view.nodes.map((node) => h("tr", {},
        h("td", {}, node.id), h("td", {}, h("span", { className: node.role === "leader" ? "tag leader" : "tag" }, node.role)),
        h("td", {}, node.voter ? "yes" : "learner"), h("td", { className: "wide" }, node.address || ""),
        h("td", {}, node.http_address ? h("a", { href: `${location.protocol}//${node.http_address}/ui/#/cluster` }, node.http_address) : ""),
        h("td", { className: "num" }, node.lag === undefined ? "" : node.lag)));
      document.getElementById("cluster-nodes").replaceChildren(h("table", {},
        h("tr", {}, h("th", {}, "id"), h("th", {}, "role"), h("th", {}, "votes"), h("th", { className: "wide" }, "cluster address"),
          h("th", {}, "console"), h("th", {}, "lag (entries)")), rows));
    },
  },
};

// --- actions -----------------------------------------------------------------------------------------------------

function say(id, message) { document.getElementById(id).textContent = message; }

async function act(resultId, work) {
  try { say(resultId, await work()); refreshNow(); } catch (failure) { say(resultId, `error: ${failure.message}`); }
}

function numberOrNull(value) { return value === "" ? null : Number(value); }

function createQueue(event) {
  event.preventDefault();
  const form = event.target.elements;
  const name = form.name.value;
  const body = { implementation: form.implementation.value };
  if (form.max_queue_size.value !== "") body.max_queue_size = numberOrNull(form.max_queue_size.value);
  if (form.max_deliveries.value !== "") body.max_deliveries = numberOrNull(form.max_deliveries.value);
  if (form.dead_letter_queue.value !== "" || body.max_deliveries !== undefined) body.dead_letter_queue = form.dead_letter_queue.value;
  if (form.retry_delay.value !== "") body.retry_delay_ms = Math.round(Number(form.retry_delay.value) * 1000);
  if (!window.confirm(`Create queue ${shown(name)}?`)) return;
  act("create-result", async () => { await api("PUT", queuePath(name), body); event.target.reset(); return `queue ${shown(name)} created`; });
}

function enqueue(event, name) {
  event.preventDefault();
  const form = event.target.elements;
  const body = { priority: Number(form.priority.value), payload: form.payload.value };
  if (form.delay.value !== "") body.delay_ms = Math.round(Number(form.delay.value) * 1000);
  act("queue-result", async () => {
    const added = await api("POST", queuePath(name, "/records"), body);
    form.payload.value = "";
    return `record ${added.id} added${body.delay_ms ? `, due in ${body.delay_ms / 1000} s` : ""}`;
  });
}

function take(name) {
  act("queue-result", async () => {
    const record = await api("POST", queuePath(name, "/dequeue"));
    if (record === null) return "no ready record";
    return `took record ${record.id} (priority ${record.priority}): ${payloadText(record)}`;
  });
}

function redrive(name) {
  if (!window.confirm(`Move up to 100 records of ${shown(name)} back to the queues they came from?`)) return;
  act("queue-result", async () => `${(await api("POST", queuePath(name, "/redrive?max=100"))).moved} record(s) moved back`);
}

function deleteQueue(name) {
  if (!window.confirm(`Delete queue ${shown(name)} and every record in it? This cannot be undone.`)) return;
  act("queue-result", async () => { await api("DELETE", queuePath(name)); location.hash = "#/"; return "deleted"; });
}

// --- routing and the refresh loop ----------------------------------------------------------------------------------

function parseRoute() {
  const hash = location.hash || "#/";
  if (hash.startsWith("#/queue/")) return { name: "queue", arg: decodeURIComponent(hash.slice("#/queue/".length)) };
  if (hash === "#/cluster") return { name: "cluster", arg: null };
  return { name: "queues", arg: null };
}

function show() {
  state.route = parseRoute();
  const root = document.getElementById("view");
  root.replaceChildren();
  views[state.route.name].build(root, state.route.arg);
  refreshNow();
}

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try {
    state.cluster = await api("GET", "/api/v1/cluster");
    state.members = state.cluster.nodes.map((node) => node.http_address).filter(Boolean);
    showStatus();
    if (state.cluster.role !== "leader") {
      const leader = state.cluster.nodes.find((node) => node.id === state.cluster.leader_id);
      if (leader && leader.http_address) return followLeader(leader.http_address);
      await findLeader();  // cut off from the others? they may know a leader
      if (state.route.name !== "cluster") throw new ConsoleError(describe(503, { reason: "no_leader" }));
    }
    await views[state.route.name].refresh(state.route.arg);
    problem(null);
  } catch (failure) {
    problem(failure.message);
    if (failure.unreachable) await findLeader();
  } finally {
    state.busy = false;
  }
}

function refreshNow() {
  clearInterval(state.timer);
  refresh();
  state.timer = setInterval(refresh, REFRESH_MS);
}

window.addEventListener("hashchange", show);
show();
