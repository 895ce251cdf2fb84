// Small DOM helpers: elements are built node by node (never from HTML strings),
// so nothing the server returns is ever interpreted as markup.

/** h("a.link", {href}, child, ...): an element with classes, attributes, children. */
export function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A value from the API as short text. */
export function show(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** A table that scrolls sideways on narrow screens. */
export function table(caption, heads, rows) {
  return h(
    "div.scroll",
    { tabindex: 0, role: "region", "aria-label": caption },
    h(
      "table",
      {},
      h("caption", { text: caption }),
      h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))) : h("tr", {}, h("td.muted", { colspan: heads.length, text: "none" }))),
    ),
  );
}

/** Definition list from [label, value] pairs. */
export function facts(pairs) {
  return h("dl.facts", {}, pairs.map(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)]));
}

/** A message in the page (role=alert for errors). */
export function notice(text, kind = "error") {
  return h("p.notice." + kind, { role: kind === "error" ? "alert" : "status", text });
}

export function link(href, text, cls) {
  return h("a" + (cls ? "." + cls : ""), { href }, text);
}

// Characters that are invisible or reorder text (bidi overrides and
// isolates, zero-width spaces and joiners, soft hyphens, other format and
// control characters): an id holding one could pass for another
// ("a1\u200b" for "a1", "\u202eexe.txt" for "txt.exe"). They are shown as
// \u{…} markers instead.
const HIDDEN = /[\p{Cf}\p{Cc}\p{Zl}\p{Zp}\u115F\u1160\u3164\uFFA0\u2800]/gu;

function marker(ch) {
  return "\\u{" + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0") + "}";
}

/** An id as plain text, its invisible and bidi characters as \u{…} markers. */
export function visibleId(id) {
  return String(id).replace(HIDDEN, marker);
}

/**
 * An id for the page: in a <bdi> (isolated from the text around it), its
 * invisible and bidi characters as visible \u{…} markers, the whole id in the
 * title (for a cell that truncates it).
 */
export function idView(id, cls) {
  const s = String(id ?? "—");
  const parts = [];
  let at = 0;
  for (const m of s.matchAll(HIDDEN)) {
    if (m.index > at) parts.push(s.slice(at, m.index));
    parts.push(h("span.esc", { text: marker(m[0]), title: "an invisible or text-direction character" }));
    at = m.index + m[0].length;
  }
  if (at < s.length) parts.push(s.slice(at));
  return h("bdi.id" + (cls ? "." + cls : ""), { title: visibleId(s) }, parts);
}

export function idLink(href, id) {
  return h("a.mono.id-link", { href, title: visibleId(id) }, idView(id));
}

export function eventLink(eventId) {
  return idLink("#/events/" + encodeURIComponent(eventId), eventId);
}

export function nodeLink(id) {
  return idLink("#/graph/" + encodeURIComponent(id), id);
}

export function short(hash) {
  return hash ? String(hash).slice(0, 12) + "…" : "—";
}

export function pre(value) {
  return h("pre.json", { tabindex: 0 }, JSON.stringify(value, null, 2));
}

/** A status word as a badge (text, not colour alone). */
export function badge(status) {
  const s = show(status);
  return h("span.badge.s-" + s.replace(/[^a-z_]/gi, ""), { text: s });
}
