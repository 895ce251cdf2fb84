// The operator console: a hash-routed single page over the v1 API.
//   #/            dashboard
//   #/feed        live event feed
//   #/attempts    attempts (paged); #/attempts/<id> one attempt
//   #/graph       graph explorer; #/graph/<node id> starting at a node
//   #/events/<id> one event; #/seq/<n> the event at a seq

import { api, optional, follow, download, seg, token, setToken, signOut, whenUnauthorized, ApiError } from "./api.js";
import { h, fill, show, table, facts, notice, link, eventLink, nodeLink, short, pre, badge } from "./ui.js";
import { Explorer, colourOf } from "./graph.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signin = document.getElementById("signin");
let cleanup = []; // stops streams and timers of the page being left

function leave() {
  for (const f of cleanup) f();
  cleanup = [];
}

function title(text) {
  document.title = text + " — Leviathan console";
  const h1 = h("h1", { tabindex: -1, text });
  return h1;
}

function errorText(e) {
  if (e instanceof ApiError) return `${e.message} (${e.status} ${e.code})`;
  return String(e && e.message ? e.message : e);
}

// ------------------------------------------------------------------ sign-in

function showSignIn(message) {
  leave();
  nav.hidden = true;
  main.hidden = true;
  signin.hidden = false;
  const msg = document.getElementById("signin-message");
  fill(msg, message ? notice(message) : "");
  document.getElementById("token").focus();
}

whenUnauthorized((e) => {
  signOut();
  showSignIn("The server refused the token: " + e.message);
});

document.getElementById("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = document.getElementById("token");
  const t = input.value.trim();
  const msg = document.getElementById("signin-message");
  if (!t) {
    fill(msg, notice("Enter a token."));
    return;
  }
  fill(msg, notice("Checking the token…", "info"));
  try {
    await api("/v1/log/head", { tok: t });
  } catch (e) {
    const text =
      e.status === 401
        ? "The server refused this token: " + e.message
        : e.status === 403
          ? "This token may not read: " + e.message
          : "Cannot sign in: " + errorText(e);
    fill(msg, notice(text));
    input.select();
    return;
  }
  setToken(t);
  input.value = "";
  fill(msg);
  start();
});

document.getElementById("signout").addEventListener("click", () => {
  signOut();
  showSignIn("Signed out.");
});

// ------------------------------------------------------------------ router

function start() {
  signin.hidden = true;
  nav.hidden = false;
  main.hidden = false;
  route();
}

async function route() {
  if (!token()) {
    showSignIn();
    return;
  }
  leave();
  const path = location.hash.replace(/^#/, "") || "/";
  const parts = path.split("?")[0].split("/").filter(Boolean).map(decodeURIComponent);
  for (const a of nav.querySelectorAll("a")) {
    const active = a.getAttribute("href") === "#/" + (parts[0] || "");
    if (active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  fill(main, h("p.muted", { text: "Loading…" }));
  try {
    switch (parts[0]) {
      case undefined: await dashboard(); break;
      case "feed": await feed(); break;
      case "attempts": parts[1] ? await attempt(parts[1]) : await attempts(); break;
      case "graph": await graph(parts[1]); break;
      case "events": await eventPage({ id: parts[1] }); break;
      case "seq": await eventPage({ seq: Number(parts[1]) }); break;
      default: fill(main, title("Not found"), notice("No such page: " + path));
    }
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    fill(main, title("Error"), notice(errorText(e)));
  }
  const h1 = main.querySelector("h1");
  if (h1) h1.focus({ preventScroll: true });
}

window.addEventListener("hashchange", route);

// Keyboard: g then d/f/a/x for the pages, / to the first search field.
let pendingG = false;
document.addEventListener("keydown", (ev) => {
  const t = ev.target;
  if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement) return;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === "/") {
    const f = main.querySelector("input");
    if (f) {
      ev.preventDefault();
      f.focus();
    }
    return;
  }
  if (pendingG) {
    pendingG = false;
    const to = { d: "#/", f: "#/feed", a: "#/attempts", x: "#/graph" }[ev.key];
    if (to) location.hash = to;
    return;
  }
  if (ev.key === "g") pendingG = true;
});

// ------------------------------------------------------------------ dashboard

function counts(caption, obj) {
  const rows = Object.entries(obj || {}).map(([k, v]) => [k, String(v)]);
  return table(caption, ["type", "count"], rows);
}

async function dashboard() {
  const [summary, head, projection] = await Promise.all([
    api("/v1/graph/summary"),
    api("/v1/log/head"),
    api("/v1/projection"),
  ]);
  const headSeq = h("span.mono", { text: String(head.seq) });
  const headHash = h("span.mono.hash", { text: show(head.hash) });
  const rate = h("span", { text: "measuring…" });
  const digest = h("span.mono.hash", { text: show(projection.state_digest) });
  const applied = h("span.mono", { text: String(projection.applied_seq) });
  const verifyOut = h("span", { text: "not run in this session" });
  const verifyBtn = h("button", {
    type: "button",
    text: "Verify the chain now",
    onclick: async () => {
      verifyBtn.disabled = true;
      fill(verifyOut, "verifying…");
      try {
        const v = await api("/v1/log/verify");
        fill(verifyOut, v.ok ? `ok: ${v.verified_events} events verified at ${new Date().toLocaleTimeString()}` : `BROKEN at seq ${v.first_broken_seq}: ${v.error}`);
        verifyOut.className = v.ok ? "ok" : "bad";
      } catch (e) {
        fill(verifyOut, errorText(e));
      } finally {
        verifyBtn.disabled = false;
      }
    },
  });
  const generations = h("div");
  const errors = h("div");

  fill(
    main,
    title("Dashboard"),
    h("section.cards", {},
      h("div.card", {}, h("h2", { text: "Log" }), facts([
        ["head seq", headSeq],
        ["head hash", headHash],
        ["ingest rate", rate],
        ["chain", h("span", {}, verifyOut, " ", verifyBtn)],
      ])),
      h("div.card", {}, h("h2", { text: "Projection" }), facts([
        ["applied seq", applied],
        ["state digest", digest],
        ["projector set", h("span.mono.hash", { text: show(projection.fingerprint) })],
      ])),
    ),
    h("section.cards", {},
      h("div.card", {}, counts("Nodes by type", summary.nodes_by_type)),
      h("div.card", {}, counts("Edges by type", summary.edges_by_type)),
    ),
    table(
      "Projectors",
      ["name", "version", "digest", "handles", "node types", "edge types"],
      projection.projectors.map((p) => [p.name, p.version, h("span.mono", { title: p.digest, text: short(p.digest) }), p.handles.join(", "), p.node_types.join(", "), p.edge_types.join(", ")]),
    ),
    h("section", {}, h("h2", { text: "Generations" }), generations),
    h("section", {}, h("h2", { text: "Recent projection errors" }), errors),
    table(
      "Recent events",
      ["time", "type", "event", "target", "attempt"],
      summary.recent_events.map((e) => [e.timestamp, e.event_type, eventLink(e.event_id), show(e.target), e.attempt_id ? link("#/attempts/" + seg(e.attempt_id), show(e.attempt_id)) : "—"]),
    ),
  );

  // Generations and projection errors come from routes other work adds: say
  // so when this server does not have them.
  const gens = projection.generations || projection.building || projection.generation || null;
  if (gens) {
    const list = Array.isArray(gens) ? gens : [gens];
    fill(generations, table("Generations", ["fingerprint", "state", "applied seq", "lag", "errors", "progress"], list.map((g) => [
      h("span.mono", { text: short(g.fingerprint) }), show(g.state ?? g.status), show(g.applied_seq), show(g.lag), show(g.errors ?? g.error_count),
      g.log_head_seq && g.applied_seq !== undefined ? h("progress", { max: g.log_head_seq, value: g.applied_seq, "aria-label": "build progress" }) : "—",
    ])));
  } else {
    fill(generations, h("p.muted", { text: "One live generation (this server reports no generation being built)." }));
  }
  optional("/v1/projection/errors?limit=10").then((r) => {
    if (r === null) {
      fill(errors, h("p.muted", { text: "This server does not record projection errors (GET /v1/projection/errors is absent)." }));
      return;
    }
    const list = r.errors || r.items || [];
    fill(errors, table("Projection errors", ["seq", "event", "projector", "code", "message"], list.map((e) => [
      e.seq !== undefined ? link("#/seq/" + e.seq, String(e.seq)) : "—", e.event_id ? eventLink(e.event_id) : "—", show(e.projector), show(e.code), show(e.message),
    ])));
  }, (e) => fill(errors, notice(errorText(e))));

  // Live head and ingest rate: poll the head (cheap at any rate of ingest).
  const samples = [[performance.now(), head.seq]];
  const timer = setInterval(async () => {
    try {
      const [hd, pr] = await Promise.all([api("/v1/log/head"), api("/v1/projection")]);
      fill(headSeq, String(hd.seq));
      fill(headHash, show(hd.hash));
      fill(digest, show(pr.state_digest));
      fill(applied, String(pr.applied_seq));
      samples.push([performance.now(), hd.seq]);
      while (samples.length > 6) samples.shift();
      const [t0, s0] = samples[0];
      const [t1, s1] = samples[samples.length - 1];
      fill(rate, t1 > t0 ? `${Math.round(((s1 - s0) * 1000) / (t1 - t0))} events/s` : "—");
    } catch (_) {
      fill(rate, "unavailable");
    }
  }, 2000);
  cleanup.push(() => clearInterval(timer));
}

// ------------------------------------------------------------------ live feed

const FEED_ROWS = 500;

async function feed() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const typeIn = h("input", { id: "feed-type", name: "type", placeholder: "attempt.* or attempt.failed", value: params.get("type") || "" });
  const targetIn = h("input", { id: "feed-target", name: "target", placeholder: "target", value: params.get("target") || "" });
  const status = h("span.status", { id: "feed-status", role: "status", "aria-live": "polite", text: "connecting…" });
  const count = h("span.muted", { text: "" });
  const body = h("tbody", { id: "feed-rows" });
  let stop = null;
  let paused = false;
  let last = null; // last seq shown
  let shown = 0;
  const pauseBtn = h("button", { type: "button", id: "feed-pause", "aria-pressed": "false", text: "Pause" });

  function row(e) {
    const p = e.payload || {};
    return h("tr", { "data-seq": e.seq },
      h("td.mono", {}, link("#/seq/" + e.seq, String(e.seq))),
      h("td", { text: e.timestamp }),
      h("td", { text: e.event_type }),
      h("td", { text: e.target }),
      h("td", {}, eventLink(e.event_id)),
      h("td", {}, p.attempt_id ? link("#/attempts/" + seg(p.attempt_id), String(p.attempt_id)) : "—"),
    );
  }

  function add(events) {
    const frag = document.createDocumentFragment();
    for (let i = events.length - 1; i >= 0; i--) frag.append(row(events[i]));
    body.prepend(frag);
    while (body.children.length > FEED_ROWS) body.lastElementChild.remove();
    last = events[events.length - 1].seq;
    shown += events.length;
    fill(count, `${shown} received${body.children.length >= FEED_ROWS ? ` (newest ${FEED_ROWS} shown)` : ""}`);
  }

  function connect(after) {
    if (stop) stop();
    stop = follow({
      after,
      type: typeIn.value.trim(),
      target: targetIn.value.trim(),
      batch: add,
      onState: (s) => fill(status, s),
    });
  }

  pauseBtn.addEventListener("click", () => {
    paused = !paused;
    pauseBtn.setAttribute("aria-pressed", String(paused));
    fill(pauseBtn, paused ? "Resume" : "Pause");
    if (paused) {
      if (stop) stop();
      stop = null;
      fill(status, "paused");
    } else {
      connect(last ?? undefined);
    }
  });

  const form = h("form.filters", {
    onsubmit: (ev) => {
      ev.preventDefault();
      body.replaceChildren();
      shown = 0;
      last = null;
      paused = false;
      pauseBtn.setAttribute("aria-pressed", "false");
      fill(pauseBtn, "Pause");
      connect(undefined);
    },
  },
    h("label", { for: "feed-type" }, "Type"), typeIn,
    h("label", { for: "feed-target" }, "Target"), targetIn,
    h("button", { type: "submit", text: "Apply" }),
    pauseBtn,
  );

  fill(main,
    title("Live events"),
    form,
    h("p", {}, status, " ", count),
    h("div.scroll", { tabindex: 0, role: "region", "aria-label": "events" },
      h("table", {},
        h("caption", { text: "Events as they are appended, newest first" }),
        h("thead", {}, h("tr", {}, ["seq", "time", "type", "target", "event", "attempt"].map((t) => h("th", { scope: "col", text: t })))),
        body,
      ),
    ),
  );

  // Start with the last few events (unfiltered), then stream after them.
  if (!typeIn.value && !targetIn.value) {
    const recent = await api("/v1/events/recent?limit=25");
    if (recent.length) add(recent.reverse());
  }
  connect(last ?? undefined);
  cleanup.push(() => stop && stop());
}

// ------------------------------------------------------------------ attempts

async function attempts() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const target = params.get("target") || "";
  const cursor = params.get("cursor") || "";
  const q = new URLSearchParams({ limit: "25" });
  if (target) q.set("target", target);
  if (cursor) q.set("cursor", cursor);
  const page = await api("/v1/attempts?" + q);
  const targetIn = h("input", { id: "attempts-target", name: "target", value: target, placeholder: "all targets" });
  const nextQ = new URLSearchParams();
  if (target) nextQ.set("target", target);
  if (page.next_cursor) nextQ.set("cursor", page.next_cursor);
  fill(main,
    title("Attempts"),
    h("form.filters", {
      onsubmit: (ev) => {
        ev.preventDefault();
        const v = targetIn.value.trim();
        location.hash = "#/attempts" + (v ? "?target=" + encodeURIComponent(v) : "");
      },
    }, h("label", { for: "attempts-target" }, "Target"), targetIn, h("button", { type: "submit", text: "Filter" })),
    table(
      "Attempts, newest first",
      ["attempt", "status", "task", "target", "time", "pull request", "seq"],
      page.attempts.map((a) => [
        link("#/attempts/" + seg(a.attempt_id), a.attempt_id, "mono"),
        badge(a.status),
        show(a.task_id),
        show(a.target),
        show(a.timestamp),
        a.pr_url ? h("span", { text: show(a.pr_url) }) : show(a.pr_number),
        String(a.created_seq),
      ]),
    ),
    h("nav.pager", { "aria-label": "pages" },
      cursor ? link("#/attempts" + (target ? "?target=" + encodeURIComponent(target) : ""), "First page") : null,
      page.next_cursor ? link("#/attempts?" + nextQ, "Next page") : h("span.muted", { text: "End of the list" }),
    ),
  );
}

async function attempt(id) {
  const d = await api("/v1/attempts/" + seg(id));
  const n = d.attempt_node;
  const p = n ? n.properties : {};
  const dialog = invalidateDialog(id);
  fill(main,
    title("Attempt " + id),
    facts([
      ["status", h("span", { id: "attempt-status" }, badge(p.status))],
      ["task", p.task_id ? nodeLink(String(p.task_id)) : "—"],
      ["target", show(p.target_id)],
      ["created", n ? `${n.created_at} (seq ${n.created_seq})` : "no attempt.created event"],
      ["updated", n ? `${n.updated_at} (seq ${n.updated_seq})` : "—"],
      ["in the graph", n ? nodeLink(id) : "—"],
    ]),
    h("p", {}, h("button.danger", { type: "button", id: "invalidate", text: "Invalidate…", disabled: !n, onclick: () => dialog.open() })),
    dialog.el,
    h("h2", { text: "Properties" }),
    pre(p),
    table("Pull requests", ["node", "url", "number"], d.pull_requests.map((pr) => [nodeLink(pr.node_id), show(pr.properties.pr_url ?? pr.properties.url), show(pr.properties.pr_number ?? pr.properties.number)])),
    table("Artifacts", ["node", "name", "sha256", ""], d.artifacts.map(artifactRow)),
    table("Events", ["seq", "time", "type", "event", "actor"], d.events.map((e) => [link("#/seq/" + e.seq, String(e.seq)), e.timestamp, e.event_type, eventLink(e.event_id), show(e.actor_id)])),
  );
}

function artifactSha(props) {
  const v = props.sha256 ?? props.content_sha256 ?? props.digest ?? null;
  return typeof v === "string" && /^[0-9a-f]{64}$/.test(v) ? v : null;
}

function artifactRow(a) {
  const sha = artifactSha(a.properties);
  const name = a.properties.name ?? a.properties.path ?? a.properties.artifact_type ?? a.node_id;
  return [
    nodeLink(a.node_id),
    show(name),
    sha ? h("span.mono", { title: sha, text: short(sha) }) : "—",
    sha ? h("button", { type: "button", text: "Download", onclick: (ev) => downloadButton(ev.target, sha, String(name).split("/").pop()) }) : h("span.muted", { text: "no content" }),
  ];
}

async function downloadButton(btn, sha, name) {
  btn.disabled = true;
  try {
    await download(sha, name);
  } catch (e) {
    btn.after(notice(errorText(e)));
  } finally {
    btn.disabled = false;
  }
}

/** The invalidate dialog: a reason, then the dry-run event, then the real append. */
function invalidateDialog(id) {
  const reason = h("textarea", { id: "invalidate-reason", rows: 3, required: true });
  const preview = h("div", { id: "invalidate-preview", "aria-live": "polite" });
  const confirm = h("button.danger", { type: "button", id: "invalidate-confirm", text: "Append this event", disabled: true });
  const show1 = h("button", { type: "button", id: "invalidate-preview-btn", text: "Show the event" });
  const cancel = h("button", { type: "button", text: "Cancel" });
  const el = h("dialog", { id: "invalidate-dialog", "aria-labelledby": "invalidate-title" },
    h("h2", { id: "invalidate-title", text: "Invalidate attempt " + id }),
    h("p", { text: "This appends an attempt.invalidated event to the log. The log is append-only: it cannot be undone." }),
    h("label", { for: "invalidate-reason" }, "Reason"),
    reason,
    h("p.buttons", {}, show1, confirm, cancel),
    preview,
  );
  let planned = null;
  reason.addEventListener("input", () => {
    confirm.disabled = true;
    planned = null;
  });
  show1.addEventListener("click", async () => {
    if (!reason.value.trim()) {
      fill(preview, notice("Give a reason."));
      reason.focus();
      return;
    }
    try {
      const plan = await api(`/v1/attempts/${seg(id)}/invalidate?dry_run=true`, { method: "POST", body: { reason: reason.value } });
      planned = reason.value;
      fill(preview, h("p", { text: `Current status: ${show(plan.current_status)}. This event would be appended:` }), pre(plan.event));
      confirm.disabled = false;
      confirm.focus();
    } catch (e) {
      fill(preview, notice(errorText(e)));
    }
  });
  confirm.addEventListener("click", async () => {
    if (planned === null) return;
    confirm.disabled = true;
    try {
      const r = await api(`/v1/attempts/${seg(id)}/invalidate`, { method: "POST", body: { reason: planned } });
      el.close();
      await attempt(id);
      main.prepend(notice(`Invalidated: event ${r.event_id} at seq ${r.seq}.`, "info"));
    } catch (e) {
      fill(preview, notice(errorText(e)));
    }
  });
  cancel.addEventListener("click", () => el.close());
  return {
    el,
    open() {
      reason.value = "";
      fill(preview);
      confirm.disabled = true;
      planned = null;
      el.showModal();
      reason.focus();
    },
  };
}

// ------------------------------------------------------------------ graph explorer

async function graph(startId) {
  const search = h("input", { id: "graph-search", name: "id", placeholder: "node id, e.g. an attempt id", value: startId || "" });
  const panel = h("aside.panel", { "aria-live": "polite" });
  const legend = h("ul.legend", { "aria-label": "node types" });
  const typeSel = h("select", { id: "graph-type" }, h("option", { value: "", text: "browse a type…" }));
  const browse = h("div", {});
  const ex = new Explorer((node, drawn) => showNode(panel, node, drawn, ex));
  fill(main,
    title("Graph explorer"),
    h("form.filters", {
      onsubmit: (ev) => {
        ev.preventDefault();
        const v = search.value.trim();
        if (v) location.hash = "#/graph/" + encodeURIComponent(v);
      },
    }, h("label", { for: "graph-search" }, "Node id"), search, h("button", { type: "submit", text: "Show" }),
      h("label", { for: "graph-type" }, "or"), typeSel),
    browse,
    h("div.explorer", {}, h("div.canvas", {}, ex.el, legend), panel),
  );
  api("/v1/graph/summary").then((s) => {
    for (const t of Object.keys(s.nodes_by_type)) typeSel.append(h("option", { value: t, text: t }));
    fill(legend, Object.keys(s.nodes_by_type).map((t) => h("li", {}, h("span.swatch", { "data-type": t }), t)));
    for (const sw of legend.querySelectorAll(".swatch")) sw.append(swatch(sw.dataset.type));
  }, () => {});
  typeSel.addEventListener("change", () => browseType(browse, typeSel.value, null));
  if (startId) {
    try {
      await ex.start(startId);
    } catch (e) {
      fill(panel, notice(e.status === 404 ? `No node ${startId}.` : errorText(e)));
    }
  } else {
    fill(panel, h("p.muted", { text: "Search for a node by id, or browse a type. Click a node (or focus it and press Enter) to expand its edges." }));
  }
}

function swatch(type) {
  const s = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  s.setAttribute("width", "12");
  s.setAttribute("height", "12");
  s.setAttribute("aria-hidden", "true");
  const c = document.createElementNS("http://www.w3.org/2000/svg", "circle");
  c.setAttribute("cx", "6"); c.setAttribute("cy", "6"); c.setAttribute("r", "6");
  c.setAttribute("fill", colourOf(type));
  s.append(c);
  return s;
}

async function browseType(el, type, cursor) {
  if (!type) {
    fill(el);
    return;
  }
  const q = new URLSearchParams({ type, limit: "20" });
  if (cursor) q.set("cursor", cursor);
  try {
    const page = await api("/v1/graph/nodes?" + q);
    fill(el, h("p.nodes", {}, `${type}: `, page.nodes.map((n) => [nodeLink(n.node_id), " "]),
      page.next_cursor ? h("button", { type: "button", text: "more", onclick: () => browseType(el, type, page.next_cursor) }) : null));
  } catch (e) {
    fill(el, notice(errorText(e)));
  }
}

async function showNode(panel, node, drawn, ex) {
  const p = node.properties || {};
  const sha = node.node_type === "Artifact" ? artifactSha(p) : null;
  const history = h("div");
  fill(panel,
    h("h2", {}, h("span.swatch", {}, swatch(node.node_type)), ` ${node.node_type} `, h("span.mono", { text: node.node_id })),
    facts([
      ["created", h("span", {}, node.created_at + " (", link("#/seq/" + node.created_seq, "seq " + node.created_seq), ")")],
      ["updated", h("span", {}, node.updated_at + " (", link("#/seq/" + node.updated_seq, "seq " + node.updated_seq), ")")],
    ]),
    drawn && drawn.cursor ? h("button", { type: "button", text: "Load more edges", onclick: () => ex.activate(node.node_id) }) : null,
    node.node_type === "Attempt" ? h("p", {}, link("#/attempts/" + seg(node.node_id), "Open the attempt")) : null,
    sha ? h("p", {}, h("button", { type: "button", text: "Download artifact", onclick: (ev) => downloadButton(ev.target, sha, String(p.name ?? p.path ?? sha).split("/").pop()) })) : null,
    h("h3", { text: "Properties" }),
    pre(p),
    h("h3", { text: "History" }),
    history,
  );
  if (node.node_type === "Attempt") {
    api("/v1/attempts/" + seg(node.node_id)).then((d) => {
      if (d.artifacts.length) panel.append(table("Artifacts", ["node", "name", "sha256", ""], d.artifacts.map(artifactRow)));
    }, () => {});
  }
  optional("/v1/graph/nodes/" + seg(node.node_id) + "/history?limit=20").then((r) => {
    if (r === null) {
      fill(history, h("p.muted", { text: "This server has no node history route." }));
      return;
    }
    const list = r.history || r.versions || r.changes || [];
    fill(history, table("History", ["seq", "event", "change"], list.map((c) => [
      c.seq !== undefined ? link("#/seq/" + c.seq, String(c.seq)) : "—", c.event_id ? eventLink(c.event_id) : "—", show(c.op ?? c.change ?? c.event_type),
    ])));
  }, (e) => fill(history, notice(errorText(e))));
}

// ------------------------------------------------------------------ one event

async function eventPage({ id, seq }) {
  let e;
  if (id !== undefined) {
    e = await api("/v1/events/" + seg(id));
  } else {
    if (!Number.isInteger(seq) || seq < 1) throw new Error("not a seq");
    const page = await api(`/v1/events?after_seq=${seq - 1}&limit=1`);
    e = page.events[0];
    if (!e || e.seq !== seq) {
      fill(main, title("Event"), notice(`No event at seq ${seq} (the log ends at ${page.head_seq}).`));
      return;
    }
  }
  const proof = h("div");
  fill(main,
    title("Event " + e.event_id),
    facts([
      ["seq", h("span.mono", { text: String(e.seq) })],
      ["event id", h("span.mono", { text: e.event_id })],
      ["type", e.event_type],
      ["time", e.timestamp],
      ["actor", show(e.actor_id)],
      ["target", e.target],
      ["hash", h("span.mono.hash", { text: e.hash })],
      ["previous hash", e.prev_hash ? h("span", {}, h("span.mono.hash", { text: e.prev_hash }), " ", link("#/seq/" + (e.seq - 1), "previous event")) : "— (the first event)"],
    ]),
    h("p.pager", {}, e.seq > 1 ? link("#/seq/" + (e.seq - 1), "← seq " + (e.seq - 1)) : null, " ", link("#/seq/" + (e.seq + 1), "seq " + (e.seq + 1) + " →")),
    h("h2", { text: "Payload" }),
    pre(e.payload),
    h("h2", { text: "Stored record" }),
    pre(e),
    h("h2", { text: "Inclusion proof" }),
    proof,
  );
  optional("/v1/log/proof/" + e.seq).then((r) => {
    fill(proof, r === null ? h("p.muted", { text: "This server does not serve inclusion proofs yet." }) : pre(r));
  }, (err) => fill(proof, notice(errorText(err))));
}

route();
