// The operator console: a hash-routed single page over the v1 API.
//   #/            dashboard
//   #/feed        live event feed
//   #/attempts    attempts (paged); #/attempts/<id> one attempt
//   #/graph       graph explorer; #/graph/<node id> starting at a node
//   #/events/<id> one event and its verified inclusion proof; #/seq/<n> the event at a seq
//   #/errors      projection errors (paged; ?projector=, ?generation=)
//   #/audit       the latest checkpoint, and a saved one checked against it (consistency)

import { api, apiText, optional, follow, download, seg, token, setToken, signOut, whenUnauthorized, whenReachable, ApiError } from "./api.js";
import { h, fill, show, table, facts, notice, link, eventLink, nodeLink, idLink, idView, visibleId, short, pre, badge } from "./ui.js";
import { Explorer, colourOf } from "./graph.js";
import { cryptoAvailable, parseCheckpoint, parseVerifierKey, verifyBundle, verifyGrowth } from "./proof.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signin = document.getElementById("signin");
const banner = document.getElementById("unreachable");
let cleanup = []; // stops streams and timers of the page being left
// Which navigation is current: a page whose data arrives after the operator
// went elsewhere (or signed out) draws nothing and starts nothing.
let navSeq = 0;

function leave() {
  navSeq++;
  for (const f of cleanup) f();
  cleanup = [];
}

/** The page's heading: a text, and an id shown safely (idView) if given. */
function title(text, id) {
  document.title = text + (id !== undefined ? " " + visibleId(id) : "") + " — Leviathan console";
  return h("h1", { tabindex: -1 }, text, id !== undefined ? [" ", idView(id, "mono")] : null);
}

// ------------------------------------------------------------------ server unreachable

// Any request that gets no answer at all (the server is down, or the
// network) shows a banner until one gets an answer again: the values on the
// page are those of the last answer.
let downSince = null;
whenReachable((ok, err) => {
  if (ok) {
    if (downSince !== null) {
      downSince = null;
      banner.hidden = true;
      fill(banner);
    }
    return;
  }
  if (downSince === null) downSince = new Date();
  banner.hidden = false;
  fill(banner,
    h("strong", { text: `The server is unreachable since ${downSince.toLocaleTimeString()}` }),
    ` (last try ${new Date().toLocaleTimeString()}: ${err ? err.message : "no answer"}). What this page shows may be out of date; it keeps trying.`);
});

// "Skip to content" moves the focus to the page's content; it is not a route.
document.querySelector("a.skip").addEventListener("click", (ev) => {
  ev.preventDefault();
  const to = main.hidden ? signin : main;
  to.focus();
  to.scrollIntoView({ block: "start" });
});

function errorText(e) {
  if (e instanceof ApiError) return `${e.message} (${e.status} ${e.code})`;
  return String(e && e.message ? e.message : e);
}

// ------------------------------------------------------------------ sign-in

function showSignIn(message) {
  leave();
  nav.hidden = true;
  main.hidden = true;
  // Nothing of the last page stays in the document once signed out.
  fill(main);
  document.title = "Sign in — Leviathan console";
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
  // Signed in (also after a reload: the token is still in the tab's session
  // storage): the pages, not the form.
  signin.hidden = true;
  nav.hidden = false;
  main.hidden = false;
  leave();
  const my = navSeq;
  // Routes are "#/…"; another fragment ("#main", from the skip link without
  // script) is not one: the dashboard.
  const path = location.hash.startsWith("#/") ? location.hash.slice(1) : "/";
  let parts;
  try {
    parts = path.split("?")[0].split("/").filter(Boolean).map(decodeURIComponent);
  } catch (_) {
    // A malformed percent-encoding ("%", "%E0%A4%A"): not an address of this console.
    for (const a of nav.querySelectorAll("a")) a.removeAttribute("aria-current");
    fill(main, title("Not a valid address"),
      notice(`The address ${visibleId(location.hash)} is not valid: it holds a malformed percent-encoding.`),
      h("p", {}, link("#/", "Go to the dashboard")));
    main.querySelector("h1").focus({ preventScroll: true });
    return;
  }
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
      case "errors": await errorsPage(); break;
      case "audit": await auditPage(); break;
      case "events": await eventPage({ id: parts[1] }); break;
      case "seq": await eventPage({ seq: Number(parts[1]) }); break;
      default: fill(main, title("Not found"), notice("No such page: " + path));
    }
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    if (my !== navSeq) return;
    fill(main, title("Error"), notice(errorText(e)));
  }
  if (my !== navSeq) return;
  const h1 = main.querySelector("h1");
  if (h1) h1.focus({ preventScroll: true });
}

window.addEventListener("hashchange", () => {
  // An in-page anchor (not "#/…") changes no page.
  if (location.hash && !location.hash.startsWith("#/")) return;
  route();
});

// Keyboard: g then d/f/a/x/e/u for the pages, / to the first search field.
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
    const to = { d: "#/", f: "#/feed", a: "#/attempts", x: "#/graph", e: "#/errors", u: "#/audit" }[ev.key];
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

/** "1,234" */
function num(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : show(n);
}

/** Seconds as "1 h 02 min", "3 min 05 s", "12 s". */
function duration(s) {
  if (typeof s !== "number" || !isFinite(s)) return "—";
  s = Math.round(s);
  if (s >= 3600) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  if (s >= 60) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${s} s`;
}

/** The background chain verifier's last result (GET /v1/log/verification). */
function verificationView(v) {
  if (!v) return h("span.muted", { text: "this server has no background verifier" });
  const when = v.last_verified_at ? ` at ${v.last_verified_at}` : "";
  switch (v.status) {
    case "ok":
      return h("span", {}, h("span.ok", { text: "ok" }), ` — seq 1 to ${num(v.verified_seq)} verified${when} (pass ${num(v.passes)}, every ${duration(v.interval_secs)})`);
    case "pending":
      return h("span", {}, h("span.status", { text: "pending" }), " — the first pass has not finished");
    case "failed":
      return h("span", {}, h("span.bad", { text: "BROKEN" }), ` at seq ${num(v.first_broken_seq)}: ${show(v.error)} (verified up to ${num(v.verified_seq)}${when})`);
    default:
      return h("span", {}, h("span.bad", { text: show(v.status) }), ` — ${show(v.error)}${when}`);
  }
}

/**
 * The combined state digest a checkpoint signs for a set with async
 * projectors (its `combined-state-digest` line), as a facts row; none when
 * the line is absent (an all-inline set, or the async lane was behind).
 */
function combinedFact(cp) {
  const c = cp.extensions["combined-state-digest"];
  return c ? [["combined state digest", h("span.mono.hash", { text: c })]] : [];
}

/** The latest signed checkpoint (GET /v1/log/checkpoint, a signed note). */
function checkpointView(text) {
  if (text === null) return h("p.muted", { text: "This server does not sign checkpoints (GET /v1/log/checkpoint is absent)." });
  let cp;
  try {
    cp = parseCheckpoint(text);
  } catch (e) {
    return notice("The checkpoint cannot be read: " + e.message);
  }
  return facts([
    ["tree size", h("span.mono", { id: "dash-checkpoint-size", text: String(cp.size) })],
    ["root", h("span.mono.hash", { text: cp.root })],
    ["chain head", h("span.mono.hash", { text: show(cp.extensions["chain-head"]) })],
    ...combinedFact(cp),
    ["signed by", cp.signatures.map((s) => h("span.mono", { text: `${s.name} (key id ${s.keyId}) ` }))],
    ["", h("span", {}, cp.size > 0 ? [link("#/seq/" + cp.size, `prove an event against it (seq ${cp.size})`), h("br")] : null, link("#/audit", "save it, or check that the log only grew since one you saved"))],
  ]);
}

/** The generation being built (or the last build), from /v1/projection's `build`. */
function buildView(b, live) {
  if (!b) {
    return h("p", { id: "dash-build", text: `No generation is being built: generation ${live} serves.` });
  }
  const pct = b.head_seq > 0 ? Math.min(100, Math.floor((b.applied_seq * 100) / b.head_seq)) : 100;
  const errs = `${num(b.errors)} (at most ${num(b.max_build_errors)} allowed)`;
  return h("div", { id: "dash-build" },
    facts([
      ["generation", h("span.mono", { text: String(b.generation) })],
      ["state", h("span", { id: "dash-build-state" }, badge(b.state))],
      ["progress", h("span", {},
        h("progress", { max: Math.max(b.head_seq, 1), value: Math.min(b.applied_seq, Math.max(b.head_seq, 1)), "aria-label": "build progress" }),
        ` seq ${num(b.applied_seq)} of ${num(b.head_seq)} (${pct} %)`)],
      ["lag", `${num(b.lag_events)} events`],
      ["rate", typeof b.events_per_second === "number" ? `${num(Math.round(b.events_per_second))} events/s` : "—"],
      ["time left", b.state === "building" ? duration(b.eta_seconds) : "—"],
      ["errors", b.errors > 0 ? link("#/errors?generation=" + b.generation, errs) : errs],
      ["projectors", h("span.mono", { text: (b.projectors || []).join(", ") })],
      ["fingerprint", h("span.mono.hash", { text: show(b.fingerprint) })],
      ["started", show(b.started_at)],
      ["resumed from seq", show(b.resumed_from_seq)],
      b.message ? ["message", h("span", { text: b.message })] : null,
    ].filter(Boolean)),
  );
}

function errorRows(list) {
  return list.map((e) => [
    e.seq !== undefined ? link("#/seq/" + e.seq, String(e.seq)) : "—", e.event_id ? eventLink(e.event_id) : "—", show(e.projector), show(e.code), show(e.message),
  ]);
}

/** The live generation's projectors, as a table. */
function projectorsTable(projection) {
  return table(
    "Projectors of the live generation",
    ["name", "version", "digest", "on error", "handles", "node types", "edge types", "limits"],
    projection.projectors.map((p) => [
      p.name, p.version, h("span.mono", { title: p.digest, text: short(p.digest) }),
      h("span", { text: show(p.on_error) }),
      p.handles.join(", "), p.node_types.join(", "), p.edge_types.join(", "),
      p.limits ? `fuel ${num(p.limits.fuel)}, ${p.limits.memory_mib} MiB` : "—",
    ]),
  );
}

/** What identifies the live set: a change re-draws the projectors' table. */
function projectorSetKey(pr) {
  return JSON.stringify([pr.generation, pr.fingerprint, (pr.projectors || []).map((p) => [p.name, p.version, p.digest, p.on_error, p.limits])]);
}

async function dashboard() {
  const my = navSeq;
  const [summary, head, projection] = await Promise.all([
    api("/v1/graph/summary"),
    api("/v1/log/head"),
    api("/v1/projection"),
  ]);
  if (my !== navSeq) return;
  const headSeq = h("span.mono", { id: "dash-head-seq", text: String(head.seq) });
  const headHash = h("span.mono.hash", { text: show(head.hash) });
  const rate = h("span", { text: "measuring…" });
  const digest = h("span.mono.hash", { text: show(projection.state_digest) });
  const applied = h("span.mono", { id: "dash-applied-seq", text: String(projection.applied_seq) });
  const lag = h("span", { text: num(projection.log_head_seq - projection.applied_seq) + " events" });
  const generation = h("span.mono", { id: "dash-generation", text: show(projection.generation) });
  const fingerprint = h("span.mono.hash", { text: show(projection.fingerprint) });
  const verification = h("span", { id: "dash-verification", text: "…" });
  const verifyOut = h("span", { role: "status", text: "" });
  const verifyBtn = h("button", {
    type: "button",
    text: "Verify the whole chain now",
    title: "Re-reads the whole log on the server (GET /v1/log/verify)",
    onclick: async () => {
      verifyBtn.disabled = true;
      fill(verifyOut, "verifying…");
      try {
        const v = await api("/v1/log/verify");
        fill(verifyOut, v.ok ? `ok: ${num(v.verified_events)} events verified at ${new Date().toLocaleTimeString()}` : `BROKEN at seq ${v.first_broken_seq}: ${v.error}`);
        verifyOut.className = v.ok ? "ok" : "bad";
      } catch (e) {
        fill(verifyOut, errorText(e));
      } finally {
        verifyBtn.disabled = false;
      }
    },
  });
  const build = h("div", {}, buildView(projection.build, projection.generation));
  const projectorsBox = h("div", { id: "dash-projectors" }, projectorsTable(projection));
  const errors = h("div", { id: "dash-errors" }, h("p.muted", { text: "Loading…" }));
  const checkpoint = h("div", { id: "dash-checkpoint" }, h("p.muted", { text: "Loading…" }));

  fill(
    main,
    title("Dashboard"),
    h("section.cards", {},
      h("div.card", {}, h("h2", { text: "Log" }), facts([
        ["head seq", headSeq],
        ["head hash", headHash],
        ["ingest rate", rate],
        ["chain verification", verification],
        ["", h("span", {}, verifyBtn, " ", verifyOut)],
      ])),
      h("div.card", {}, h("h2", { text: "Live generation" }), facts([
        ["generation", generation],
        ["applied seq", applied],
        ["lag", lag],
        ["state digest", digest],
        ["projector set", fingerprint],
      ])),
      h("div.card", {}, h("h2", { text: "Latest signed checkpoint" }), checkpoint),
    ),
    projectorsBox,
    h("section", { "aria-labelledby": "dash-build-title" }, h("h2", { id: "dash-build-title", text: "Generation being built" }), build),
    h("section", { "aria-labelledby": "dash-errors-title" }, h("h2", { id: "dash-errors-title", text: "Projection errors" }), errors),
    h("section.cards", {},
      h("div.card", {}, counts("Nodes by type", summary.nodes_by_type)),
      h("div.card", {}, counts("Edges by type", summary.edges_by_type)),
    ),
    table(
      "Recent events",
      ["time", "type", "event", "target", "attempt"],
      summary.recent_events.map((e) => [e.timestamp, e.event_type, eventLink(e.event_id), idView(show(e.target)), e.attempt_id ? idLink("#/attempts/" + seg(e.attempt_id), e.attempt_id) : "—"]),
    ),
  );

  // The slower parts, each on its own: one that fails says so in its place.
  function refreshVerification() {
    optional("/v1/log/verification").then((v) => fill(verification, verificationView(v)), (e) => fill(verification, errorText(e)));
  }
  function refreshCheckpoint() {
    apiText("/v1/log/checkpoint").then((t) => fill(checkpoint, checkpointView(t)), (e) =>
      fill(checkpoint, e instanceof ApiError && e.status === 404 ? checkpointView(null) : notice(errorText(e))));
  }
  function refreshErrors(pr) {
    // The live generation's most recent errors, newest first; a build's are
    // on the errors page (linked from its count).
    optional("/v1/projection/errors?order=newest&limit=5").then((r) => {
      if (r === null) {
        fill(errors, h("p.muted", { text: "This server does not record projection errors (GET /v1/projection/errors is absent)." }));
        return;
      }
      const recording = pr.projectors.filter((p) => p.on_error === "record").map((p) => p.name);
      fill(errors,
        r.errors.length
          ? table("Recent projection errors of the live generation (newest first)", ["seq", "event", "projector", "code", "message"], errorRows(r.errors))
          : h("p", { text: recording.length ? `None recorded (projectors that record errors: ${recording.join(", ")}).` : "None: every live projector refuses a bad event (on_error = reject), so the live graph has no recorded errors." }),
        h("p", {}, link("#/errors", "All projection errors, page by page"), pr.build && pr.build.errors > 0 ? [" · ", link("#/errors?generation=" + pr.build.generation, `the ${num(pr.build.errors)} errors of generation ${pr.build.generation}'s build`)] : null),
      );
    }, (e) => fill(errors, notice(errorText(e))));
  }
  refreshVerification();
  refreshCheckpoint();
  refreshErrors(projection);

  // Live: poll the head and the projection (cheap at any log size: counters,
  // not scans); the verifier's result and the checkpoint every 10 s.
  const samples = [[performance.now(), head.seq]];
  let tick = 0;
  let lastProjection = projection;
  let lastBuild = JSON.stringify(projection.build);
  let lastSet = projectorSetKey(projection);
  let lastErrors = JSON.stringify([projection.generation, projection.build && projection.build.generation, projection.build && projection.build.errors, projection.build && projection.build.state]);
  const timer = setInterval(async () => {
    tick++;
    try {
      const [hd, pr] = await Promise.all([api("/v1/log/head"), api("/v1/projection")]);
      lastProjection = pr;
      fill(headSeq, String(hd.seq));
      fill(headHash, show(hd.hash));
      fill(digest, show(pr.state_digest));
      fill(applied, String(pr.applied_seq));
      fill(lag, num(pr.log_head_seq - pr.applied_seq) + " events");
      fill(generation, show(pr.generation));
      fill(fingerprint, show(pr.fingerprint));
      // A switch to another projector set: its projectors.
      const set = projectorSetKey(pr);
      if (set !== lastSet) {
        lastSet = set;
        fill(projectorsBox, projectorsTable(pr));
      }
      const b = JSON.stringify(pr.build);
      if (b !== lastBuild) {
        lastBuild = b;
        fill(build, buildView(pr.build, pr.generation));
      }
      // The errors list changes with the live generation or a build's errors.
      const e = JSON.stringify([pr.generation, pr.build && pr.build.generation, pr.build && pr.build.errors, pr.build && pr.build.state]);
      if (e !== lastErrors) {
        lastErrors = e;
        refreshErrors(pr);
      }
      samples.push([performance.now(), hd.seq]);
      while (samples.length > 6) samples.shift();
      const [t0, s0] = samples[0];
      const [t1, s1] = samples[samples.length - 1];
      fill(rate, t1 > t0 ? `${Math.round(((s1 - s0) * 1000) / (t1 - t0))} events/s` : "—");
    } catch (_) {
      fill(rate, "unavailable");
    }
    if (tick % 5 === 0) {
      refreshVerification();
      refreshCheckpoint();
      if (lastProjection) refreshErrors(lastProjection);
    }
  }, 2000);
  cleanup.push(() => clearInterval(timer));
}

// ------------------------------------------------------------------ projection errors

async function errorsPage() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const projector = params.get("projector") || "";
  const gen = params.get("generation") || "";
  const cursor = params.get("cursor") || "";
  const q = new URLSearchParams({ limit: "50" });
  if (projector) q.set("projector", projector);
  if (gen) q.set("generation", gen);
  if (cursor) q.set("cursor", cursor);
  const my = navSeq;
  const page = await optional("/v1/projection/errors?" + q);
  if (my !== navSeq) return;
  if (page === null && !gen) {
    fill(main, title("Projection errors"), h("p.muted", { text: "This server does not record projection errors (GET /v1/projection/errors is absent)." }));
    return;
  }
  if (page === null) {
    fill(main, title("Projection errors"), notice(`The server knows no generation ${gen}.`));
    return;
  }
  const projIn = h("input", { id: "errors-projector", name: "projector", value: projector, placeholder: "every projector" });
  const genIn = h("input", { id: "errors-generation", name: "generation", value: gen, placeholder: "the live one", inputmode: "numeric" });
  const base = new URLSearchParams();
  if (projector) base.set("projector", projector);
  if (gen) base.set("generation", gen);
  const next = new URLSearchParams(base);
  if (page.next_cursor) next.set("cursor", page.next_cursor);
  fill(main,
    title("Projection errors"),
    h("p", { text: "Errors recorded by projectors deployed with on_error = \"record\" (the event is stored, that projector's ops for it are dropped), and by a generation's build. In log order." }),
    h("form.filters", {
      onsubmit: (ev) => {
        ev.preventDefault();
        const f = new URLSearchParams();
        if (projIn.value.trim()) f.set("projector", projIn.value.trim());
        if (genIn.value.trim()) f.set("generation", genIn.value.trim());
        location.hash = "#/errors" + (String(f) ? "?" + f : "");
      },
    }, h("label", { for: "errors-projector" }, "Projector"), projIn, h("label", { for: "errors-generation" }, "Generation"), genIn, h("button", { type: "submit", text: "Filter" })),
    table(gen ? `Errors of generation ${gen}` : "Errors of the live generation", ["seq", "event", "projector", "code", "message"], errorRows(page.errors)),
    h("nav.pager", { "aria-label": "pages" },
      cursor ? link("#/errors" + (String(base) ? "?" + base : ""), "First page") : null,
      page.next_cursor ? link("#/errors?" + next, "Next page") : h("span.muted", { text: "End of the list" }),
    ),
  );
}

// ------------------------------------------------------------------ live feed

const FEED_ROWS = 500;

async function feed() {
  const my = navSeq;
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
      h("td", {}, idView(e.target)),
      h("td", {}, eventLink(e.event_id)),
      h("td", {}, p.attempt_id ? idLink("#/attempts/" + seg(p.attempt_id), String(p.attempt_id)) : "—"),
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
      onState: (s, kind) => {
        fill(status, s);
        status.className = "status" + (kind === "refused" ? " bad" : kind === "retry" ? " warn" : "");
      },
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

  // Stopped when the page is left, even before the first events arrived.
  cleanup.push(() => {
    if (stop) stop();
    stop = null;
  });
  // Start with the last few events (unfiltered), then stream after them.
  if (!typeIn.value && !targetIn.value) {
    const recent = await api("/v1/events/recent?limit=25");
    // Left meanwhile: no stream for a page that is gone.
    if (my !== navSeq) return;
    if (recent.length) add(recent.reverse());
  }
  connect(last ?? undefined);
}

// ------------------------------------------------------------------ attempts

async function attempts() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const target = params.get("target") || "";
  const cursor = params.get("cursor") || "";
  const q = new URLSearchParams({ limit: "25" });
  if (target) q.set("target", target);
  if (cursor) q.set("cursor", cursor);
  const my = navSeq;
  const page = await api("/v1/attempts?" + q);
  if (my !== navSeq) return;
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
        idLink("#/attempts/" + seg(a.attempt_id), a.attempt_id),
        badge(a.status),
        a.task_id ? idView(a.task_id) : "—",
        a.target ? idView(a.target) : "—",
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
  const my = navSeq;
  const d = await api("/v1/attempts/" + seg(id));
  if (my !== navSeq) return;
  const n = d.attempt_node;
  const p = n ? n.properties : {};
  const dialog = invalidateDialog(id);
  fill(main,
    title("Attempt", id),
    facts([
      ["status", h("span", { id: "attempt-status" }, badge(p.status))],
      ["task", p.task_id ? nodeLink(String(p.task_id)) : "—"],
      ["target", p.target_id ? idView(p.target_id) : "—"],
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
    h("h2", { id: "invalidate-title" }, "Invalidate attempt ", idView(id, "mono")),
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
      fill(preview, h("p", { text: `Current status: ${show(plan.current_status)}. This event would be appended (its id and timestamp are set when it is appended):` }), pre(plan.event));
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
      fill(panel, notice(e.status === 404 ? `No node ${visibleId(startId)}.` : errorText(e)));
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
  const arts = h("div", { id: "node-artifacts" });
  fill(panel,
    h("h2", {}, h("span.swatch", {}, swatch(node.node_type)), ` ${node.node_type} `, idView(node.node_id, "mono")),
    facts([
      ["created", h("span", {}, node.created_at + " (", link("#/seq/" + node.created_seq, "seq " + node.created_seq), ")")],
      ["updated", h("span", {}, node.updated_at + " (", link("#/seq/" + node.updated_seq, "seq " + node.updated_seq), ")")],
    ]),
    drawn && drawn.cursor ? h("button", { type: "button", text: "Load more edges", onclick: () => ex.activate(node.node_id) }) : null,
    node.node_type === "Attempt" ? h("p", {}, link("#/attempts/" + seg(node.node_id), "Open the attempt")) : null,
    sha ? h("p", {}, h("button", { type: "button", text: "Download artifact", onclick: (ev) => downloadButton(ev.target, sha, String(p.name ?? p.path ?? sha).split("/").pop()) })) : null,
    arts,
    h("h3", { text: "Properties" }),
    pre(p),
    h("h3", { text: "History" }),
    history,
  );
  if (node.node_type === "Attempt") {
    api("/v1/attempts/" + seg(node.node_id)).then((d) => {
      fill(arts, table("Artifacts it produced", ["node", "name", "sha256", ""], d.artifacts.map(artifactRow)));
    }, (e) => fill(arts, notice(errorText(e))));
  }
  nodeHistory(history, node);
}

const HISTORY_PAGE = 20;

/** An op's kind: "put_node", "merge_node", "delete_node"… */
function opKind(op) {
  return op && typeof op === "object" && op.op ? String(op.op) : show(op);
}

/**
 * A node's history (GET /v1/graph/nodes/{id}/history, oldest first, a page at
 * a time) and its state as of any seq (GET /v1/graph/nodes/{id}?as_of_seq=N).
 */
function nodeHistory(box, node) {
  const id = node.node_id;
  const body = h("tbody", { id: "history-rows" });
  const more = h("p");
  const asOfIn = h("input", { id: "as-of-seq", name: "as_of_seq", inputmode: "numeric", size: 10, placeholder: "a seq" });
  const asOfOut = h("div", { id: "as-of", "aria-live": "polite" });
  const heads = ["seq", "event", "change", "view"];

  async function asOf(seq) {
    asOfIn.value = String(seq);
    fill(asOfOut, h("p.muted", { text: `Reading ${id} as of seq ${seq}…` }));
    try {
      const n = await api(`/v1/graph/nodes/${seg(id)}?as_of_seq=${encodeURIComponent(seq)}`);
      fill(asOfOut,
        h("h4", { id: "as-of-title", tabindex: -1 }, idView(id), ` as of seq ${seq}`),
        facts([
          ["created", h("span", {}, `${n.created_at} (`, link("#/seq/" + n.created_seq, "seq " + n.created_seq), ")")],
          ["last changed", h("span", {}, `${n.updated_at} (`, link("#/seq/" + n.updated_seq, "seq " + n.updated_seq), ")")],
        ]),
        changedProps(n.properties, node.properties),
        pre(n.properties),
      );
    } catch (e) {
      const text = e instanceof ApiError && e.status === 404
        ? `${visibleId(id)} did not exist as of seq ${seq} (not created yet, or deleted).`
        : errorText(e);
      fill(asOfOut, h("h4", { id: "as-of-title", tabindex: -1 }, idView(id), ` as of seq ${seq}`), notice(text, e.status === 404 ? "info" : "error"));
    }
    const t = asOfOut.querySelector("h4");
    if (t) t.focus({ preventScroll: false });
  }

  async function page(cursor) {
    const q = new URLSearchParams({ limit: String(HISTORY_PAGE) });
    if (cursor) q.set("cursor", cursor);
    const r = await optional(`/v1/graph/nodes/${seg(id)}/history?${q}`);
    if (r === null) {
      fill(box, h("p.muted", { text: "This server has no node history (GET /v1/graph/nodes/{id}/history is absent)." }));
      return;
    }
    for (const c of r.changes) {
      body.append(h("tr", { "data-seq": c.seq },
        h("td.mono", {}, link("#/seq/" + c.seq, String(c.seq)), c.ord ? `.${c.ord}` : ""),
        h("td", {}, c.event_id ? eventLink(c.event_id) : "—", h("br"), h("span.muted.small", { text: show(c.event_type) })),
        h("td", {}, h("span.mono", { text: opKind(c.op) }), c.node === null ? " (deleted)" : "", h("br"), h("span.muted.small", { text: "by " + show(c.projector) })),
        h("td", {}, h("button.small", { type: "button", text: "as of", title: `View ${id} as of seq ${c.seq}`, "aria-label": `View ${id} as of seq ${c.seq}`, onclick: () => asOf(c.seq) })),
      ));
    }
    if (!body.children.length) body.append(h("tr", {}, h("td.muted", { colspan: heads.length, text: "no changes recorded" })));
    fill(more, r.next_cursor
      ? h("button", { type: "button", id: "history-more", text: `Later changes (${HISTORY_PAGE} more)`, onclick: () => page(r.next_cursor).catch((e) => fill(more, notice(errorText(e)))) })
      : h("span.muted", { text: r.history_from > 1 ? `Recorded from seq ${r.history_from} (the store predates the history index before it).` : "Every change since the node was created." }));
  }

  fill(box,
    h("div.scroll", { tabindex: 0, role: "region", "aria-label": "history" },
      h("table", {},
        h("caption", { text: "Changes, oldest first" }),
        h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col", text: t })))),
        body)),
    more,
    h("form.filters", {
      onsubmit: (ev) => {
        ev.preventDefault();
        const v = asOfIn.value.trim();
        if (!/^[0-9]+$/.test(v)) {
          fill(asOfOut, notice("A seq is a whole number (0 is before the first event)."));
          asOfIn.focus();
          return;
        }
        asOf(Number(v));
      },
    }, h("label", { for: "as-of-seq" }, "View as of seq"), asOfIn, h("button", { type: "submit", text: "Show" })),
    asOfOut,
  );
  page(null).catch((e) => fill(box, notice(errorText(e))));
}

/** Which properties differ between the node then and now, as a short list. */
function changedProps(then, now) {
  const keys = new Set([...Object.keys(then || {}), ...Object.keys(now || {})]);
  const diff = [...keys].filter((k) => JSON.stringify((then || {})[k]) !== JSON.stringify((now || {})[k])).sort();
  if (!diff.length) return h("p", { text: "The same properties as now." });
  return table("Properties that differ from now", ["property", "then", "now"], diff.map((k) => [
    h("span.mono", { text: k }), h("span.mono", { text: show((then || {})[k]) }), h("span.mono", { text: show((now || {})[k]) }),
  ]));
}

// ------------------------------------------------------------------ audit: the log only grew

/**
 * An auditor's check that the log only grew since a checkpoint they saved:
 * the latest checkpoint, the consistency proof between the two sizes, both
 * checked in the browser (proof.js: RFC 9162 §2.1.4.2, Ed25519 signatures).
 */
async function auditPage() {
  const my = navSeq;
  const [latest, serverKey] = await Promise.all([apiText("/v1/log/checkpoint"), apiText("/v1/log/public-key").catch(() => "")]);
  if (my !== navSeq) return;
  let cp;
  try {
    cp = parseCheckpoint(latest);
  } catch (e) {
    fill(main, title("Audit"), notice("The server's checkpoint cannot be read: " + e.message));
    return;
  }
  const saved = h("textarea.mono", { id: "saved-checkpoint", rows: 8, spellcheck: "false", placeholder: "leviathan/…\n1234\n…base64 root…\n…\n\n— leviathan/… …" });
  const keyIn = h("input.wide", { id: "audit-key", name: "key", spellcheck: "false", autocomplete: "off", value: serverKey.trim() });
  const status = h("p.verdict", { id: "growth-status", role: "status", "aria-live": "polite", text: "Paste a checkpoint saved earlier and press Check." });
  const checks = h("div", { id: "growth-checks" });
  fill(main,
    title("Audit: has the log only grown?"),
    h("p", { text: "A consistency proof shows that every record of a checkpoint you saved earlier is still in the log, unchanged and in the same order: a history rewritten since fails, even with its hash chain recomputed. The check runs in this browser." }),
    h("h2", { text: "The latest signed checkpoint" }),
    facts([
      ["tree size", h("span.mono", { id: "audit-latest-size", text: String(cp.size) })],
      ["root", h("span.mono.hash", { text: cp.root })],
    ]),
    h("pre.json", { tabindex: 0, id: "latest-checkpoint", text: latest }),
    h("p", {}, h("button", { type: "button", id: "save-checkpoint", text: "Save this checkpoint", onclick: () => saveText(latest, `checkpoint-${cp.size}.txt`) })),
    h("h2", { text: "Check a saved checkpoint against it" }),
    h("form", {
      onsubmit: async (ev) => {
        ev.preventDefault();
        await check();
      },
    },
      h("p", {}, h("label", { for: "saved-checkpoint" }, "Saved checkpoint (the whole signed note)"), h("br"), saved),
      h("p", {}, h("label", { for: "audit-key" }, "Verifier key"), " ", keyIn),
      h("p", {}, h("button", { type: "submit", id: "growth-check", text: "Check" })),
    ),
    status,
    checks,
  );

  async function check() {
    // Each check starts from an empty table: a result shown is this check's.
    fill(checks);
    const fail = (text) => {
      fill(status, text);
      status.className = "verdict bad";
    };
    if (!cryptoAvailable()) {
      fail("Not checked: this page is not a secure context (HTTPS or loopback), so the browser offers no WebCrypto. Use leviathan audit check-consistency.");
      return;
    }
    let old;
    try {
      old = parseCheckpoint(saved.value.replace(/\r\n/g, "\n").replace(/\n*$/, "\n"));
    } catch (e) {
      fail("That is not a checkpoint: " + e.message);
      return;
    }
    status.className = "verdict";
    fill(status, "Checking…");
    let now, size, proof;
    try {
      // The latest checkpoint again (the log may have grown since the page loaded).
      now = await apiText("/v1/log/checkpoint");
      size = parseCheckpoint(now).size;
      if (old.size > size) {
        fail(`NOT consistent: the saved checkpoint is of ${old.size} records, the log now has ${size}.`);
        return;
      }
      proof = await api(`/v1/log/consistency?from=${old.size}&to=${size}`);
    } catch (e) {
      fail("Not checked: " + errorText(e));
      return;
    }
    const r = await verifyGrowth(saved.value.replace(/\r\n/g, "\n").replace(/\n*$/, "\n"), now, proof, keyIn.value.trim() || null);
    fill(checks, table("Checks, made in this browser", ["check", "result", "detail"], r.checks.map((c) => [
      c.check, h("span", { class: c.ok ? "ok" : "bad", text: c.ok ? "passed" : "FAILED" }), h("span.mono.hash", { text: c.detail }),
    ])), h("p", {}, `Consistency path: ${proof.path.length} hashes.`));
    if (r.ok) {
      const signed = r.checks.some((c) => c.check.endsWith("signature")) ? "; both signatures checked" : " (no verifier key: the signatures were not checked)";
      fill(status, `The log only grew: the checkpoint of size ${old.size} you saved is a prefix of the latest checkpoint, of size ${size}${signed}.`);
      status.className = "verdict ok";
    } else {
      fill(status, "NOT verified: " + r.checks.filter((c) => !c.ok).map((c) => c.check).join(", ") + ".");
      status.className = "verdict bad";
    }
  }
}

/** Saves text as a file (a blob: nothing leaves the browser). */
function saveText(text, name) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ------------------------------------------------------------------ one event

// Event ids that GET /v1/events/{id} cannot serve: those paths are other
// routes (docs/API.md, "GET /v1/events/stream"). Such an event is found
// through its proof (which gives its seq), then read by seq.
const SHADOWED = new Set(["recent", "stream", "ingest"]);

/** The event at `seq` and the log's head then: {e (or undefined), head}. */
async function eventAt(seq) {
  const page = await api(`/v1/events?after_seq=${seq - 1}&limit=1`);
  const e = page.events[0];
  return { e: e && e.seq === seq ? e : undefined, head: page.head_seq };
}

async function eventPage({ id, seq }) {
  const my = navSeq;
  let e;
  let head = null; // the log's head when known (to offer the next seq)
  try {
    if (id === undefined) {
      if (!Number.isInteger(seq) || seq < 1) {
        fill(main, title("Event"), notice("A seq is a whole number from 1."));
        return;
      }
      const r = await eventAt(seq);
      if (my !== navSeq) return;
      if (!r.e) {
        fill(main, title("Event"), notice(`No event at seq ${seq} (the log ends at ${r.head}).`));
        return;
      }
      [e, head] = [r.e, r.head];
    } else if (SHADOWED.has(id)) {
      const p = await api(`/v1/events/${seg(id)}/proof`);
      const r = await eventAt(p.seq);
      if (!r.e || r.e.event_id !== id) throw new Error(`the event at seq ${p.seq} is not ${id}`);
      [e, head] = [r.e, r.head];
    } else {
      e = await api("/v1/events/" + seg(id));
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && id !== undefined) {
      if (my !== navSeq) return;
      fill(main, title("Event", id), notice("The log has no event with this id."));
      return;
    }
    throw err;
  }
  if (my !== navSeq) return;
  const proof = h("div");
  // "seq N+1 →" only when the log goes on after this event.
  const next = h("span");
  const offerNext = (headSeq) => fill(next, headSeq > e.seq ? link("#/seq/" + (e.seq + 1), "seq " + (e.seq + 1) + " →") : h("span.muted", { text: "the last event of the log" }));
  if (head !== null) offerNext(head);
  fill(main,
    title("Event", e.event_id),
    facts([
      ["seq", h("span.mono", { text: String(e.seq) })],
      ["event id", idView(e.event_id, "mono")],
      ["type", e.event_type],
      ["time", e.timestamp],
      ["actor", e.actor_id ? idView(e.actor_id) : "—"],
      ["target", idView(e.target)],
      ["hash", h("span.mono.hash", { text: e.hash })],
      ["previous hash", e.prev_hash ? h("span", {}, h("span.mono.hash", { text: e.prev_hash }), " ", link("#/seq/" + (e.seq - 1), "previous event")) : "— (the first event)"],
    ]),
    h("p.pager", {}, e.seq > 1 ? link("#/seq/" + (e.seq - 1), "← seq " + (e.seq - 1)) : null, " ", next),
    h("h2", { text: "Payload" }),
    pre(e.payload),
    h("h2", { text: "Stored record" }),
    pre(e),
    h("h2", { text: "Inclusion proof" }),
    proof,
  );
  // Without the head yet: the proof's tree size is the head as the bundle
  // was read (no extra request); a server without bundles is asked its head.
  inclusion(proof, e, (treeSize) => {
    if (head !== null || my !== navSeq) return;
    if (treeSize !== null) offerNext(treeSize);
    else api("/v1/log/head").then((hd) => my === navSeq && offerNext(hd.seq), () => {});
  });
}

/**
 * The event's inclusion proof against the latest signed checkpoint, checked
 * here, in the browser (proof.js): the record's hash, its leaf, the RFC 9162
 * path to the checkpoint's root, the checkpoint's signature. One request for
 * the proof material (the audit bundle: record, proof and checkpoint from one
 * view of the store) and one for the verifier key.
 */
async function inclusion(box, e, treeSizeKnown = () => {}) {
  fill(box, h("p.muted", { text: "Fetching the proof…" }));
  let bundle, serverKey;
  try {
    [bundle, serverKey] = await Promise.all([
      optional("/v1/events/" + seg(e.event_id) + "/bundle"),
      apiText("/v1/log/public-key").catch(() => ""),
    ]);
  } catch (err) {
    treeSizeKnown(null);
    fill(box, notice(errorText(err)));
    return;
  }
  treeSizeKnown(bundle && bundle.proof ? bundle.proof.tree_size : null);
  if (bundle === null) {
    fill(box, h("p.muted", { text: "This server does not serve inclusion proofs (GET /v1/events/{id}/bundle is absent)." }));
    return;
  }
  const p = bundle.proof;
  const status = h("p.verdict", { id: "proof-status", role: "status", "aria-live": "polite", text: "Checking…" });
  const checks = h("div", { id: "proof-checks" });
  const cpFacts = h("div");
  const keyIn = h("input.wide", { id: "verifier-key", name: "key", spellcheck: "false", autocomplete: "off", value: serverKey.trim() });
  const again = h("form.filters", {
    onsubmit: (ev) => {
      ev.preventDefault();
      run();
    },
  },
    h("label", { for: "verifier-key" }, "Verifier key"), keyIn,
    h("button", { type: "submit", text: "Check again" }),
    h("button", { type: "button", text: "Download the audit bundle", onclick: () => saveJson(bundle, `bundle-${e.event_id}.json`) }),
  );
  fill(box,
    status,
    facts([
      ["leaf index", h("span.mono", { id: "proof-leaf-index", text: String(p.leaf_index) })],
      ["tree size", h("span.mono", { id: "proof-tree-size", text: String(p.tree_size) })],
      ["leaf hash", h("span.mono.hash", { text: p.leaf_hash })],
      ["root", h("span.mono.hash", { text: p.root })],
    ]),
    table(`Audit path (${p.path.length} hashes, from the leaf up)`, ["level", "hash"], p.path.map((x, i) => [String(i), h("span.mono.hash", { text: x })])),
    h("h3", { text: "Checkpoint" }),
    cpFacts,
    h("h3", { text: "Checks, made in this browser" }),
    checks,
    h("p.muted", { text: "The key is the one this server presents (GET /v1/log/public-key). An auditor pastes the key obtained from the operator out of band; the signature is then checked against that." }),
    again,
  );

  async function run() {
    if (!cryptoAvailable()) {
      fill(status, "Not checked: this page is not a secure context (HTTPS or loopback), so the browser offers no WebCrypto. Download the audit bundle and run leviathan audit verify-bundle.");
      status.className = "verdict bad";
      return;
    }
    fill(status, "Checking…");
    status.className = "verdict";
    const key = keyIn.value.trim() || null;
    // A key that is not a verifier key at all is reported as such, not as a
    // signature that failed.
    let malformed = null;
    if (key) {
      try {
        parseVerifierKey(key);
      } catch (err) {
        malformed = err.message;
      }
    }
    const r = await verifyBundle(bundle, e, malformed ? null : key);
    if (malformed) r.checks.push({ check: "verifier key", ok: false, detail: "malformed: " + malformed });
    const cp = r.checkpoint;
    if (cp) {
      fill(cpFacts, facts([
        ["origin", h("span.mono", { text: cp.origin })],
        ["tree size", h("span.mono", { id: "checkpoint-size", text: String(cp.size) })],
        ["root", h("span.mono.hash", { text: cp.root })],
        ["chain head", h("span.mono.hash", { text: show(cp.extensions["chain-head"]) })],
        ["state digest", h("span.mono.hash", { text: show(cp.extensions["state-digest"]) })],
        ...combinedFact(cp),
        ["signed by", cp.signatures.map((s) => h("span.mono", { text: `${s.name} (key id ${s.keyId}) ` }))],
      ]), h("details", {}, h("summary", { text: "The signed note" }), h("pre.json", { tabindex: 0, text: bundle.checkpoint })));
    }
    fill(checks, table("Checks", ["check", "result", "detail"], r.checks.map((c) => [
      c.check, h("span", { class: c.ok ? "ok" : "bad", text: c.ok ? "passed" : "FAILED" }), h("span.mono.hash", { text: c.detail }),
    ])));
    const where = cp ? `seq ${e.seq} is leaf ${p.leaf_index} of the log's Merkle tree of size ${cp.size} (root ${short(cp.root)})` : "";
    if (r.included && cp && malformed) {
      fill(status, `NOT verified: the verifier key is malformed (${malformed}), so the checkpoint's signature was not checked. The inclusion proof itself holds: ${where}.`);
      status.className = "verdict bad";
    } else if (r.included && cp && r.signed === false) {
      const why = r.checks.find((c) => c.check === "checkpoint signature");
      fill(status, `NOT verified: the checkpoint's signature did NOT check with this key (${why ? why.detail : "no valid signature"}). The inclusion proof itself holds: ${where}.`);
      status.className = "verdict bad";
    } else if (r.included && cp) {
      const sig = r.signed === true ? ", signature checked" : " (no key given: signature not checked)";
      fill(status, `Verified against checkpoint of size ${cp.size}: seq ${e.seq} is leaf ${p.leaf_index} of the log's Merkle tree (root ${short(cp.root)})${sig}.`);
      status.className = "verdict ok";
    } else {
      fill(status, "NOT verified: " + r.checks.filter((c) => !c.ok).map((c) => c.check).join(", ") + ".");
      status.className = "verdict bad";
    }
  }
  await run();
}

/** Saves a JSON value as a file (a blob: nothing leaves the browser). */
function saveJson(value, name) {
  const url = URL.createObjectURL(new Blob([JSON.stringify(value, null, 2)], { type: "application/json" }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

route();
