// The graph explorer: an SVG drawing of a node's neighbourhood. Nodes are
// coloured by type (with the type in the label too, not colour alone), edges
// carry their type, a click (or Enter) on a node selects it and expands its
// edges. Each expansion reads one page of edges: nothing loads the whole graph.

import { api, seg } from "./api.js";
import { visibleId } from "./ui.js";

const NS = "http://www.w3.org/2000/svg";
const PAGE = 40;
// Fill colours with at least 3:1 contrast against the white background (WCAG
// AA for graphics); labels are dark text beside the circle.
const PALETTE = ["#1f5fbf", "#b3261e", "#1e7a3c", "#8a4b00", "#6a3fb5", "#00727a", "#a3216b", "#4d5b00", "#5b5b5b"];
const KNOWN = ["Target", "Task", "Attempt", "Artifact", "PullRequest", "TestRun"];

export function colourOf(type) {
  const i = KNOWN.indexOf(type);
  if (i >= 0) return PALETTE[i];
  let x = 0;
  for (const ch of String(type)) x = (x * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[KNOWN.length + (x % (PALETTE.length - KNOWN.length))];
}

// Layout: a node is a circle (r 16) with its id and type to its right. Its
// box must not overlap another's, so that every circle and label stays
// readable. Labels are cut at LABEL_CHARS (the whole id in a tooltip).
const LABEL_CHARS = 24;
const GAP = 6; // between two boxes
const RING0 = 150; // first ring around an expanded node
const RING_STEP = 56; // each further ring
const SLOT = 46; // arc between two places on a ring
const SCALE_MIN = 0.75; // below this the drawing grows and the canvas scrolls

function labelOf(id) {
  const v = visibleId(id);
  return v.length > LABEL_CHARS ? v.slice(0, LABEL_CHARS - 1) + "…" : v;
}

/** The box a node at (x, y) takes, its labels included (estimated widths). */
function box(x, y, id, type) {
  const w = Math.max(labelOf(id).length * 7.4, String(type).length * 6.2);
  return { x0: x - 19, x1: x + 24 + w, y0: y - 19, y1: y + 19 };
}

function apart(a, b) {
  return a.x1 + GAP <= b.x0 || b.x1 + GAP <= a.x0 || a.y1 + GAP <= b.y0 || b.y1 + GAP <= a.y0;
}

function svg(tag, attrs, ...kids) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  for (const k of kids) el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return el;
}

/**
 * A neighbourhood drawing. `onSelect(node)` is called with the node record
 * (from GET /v1/graph/nodes/{id}) when one is selected.
 */
export class Explorer {
  constructor(onSelect) {
    this.onSelect = onSelect;
    this.nodes = new Map(); // id -> {id, type, x, y, expanded, cursor}
    this.edges = new Map(); // edge_id -> edge
    this.selected = null;
    this.el = svg("svg", { class: "graph", role: "group", "aria-label": "graph neighbourhood", viewBox: "-500 -350 1000 700" });
    this.edgeLayer = svg("g", {});
    this.nodeLayer = svg("g", {});
    this.el.append(
      svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 22, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#444" }))),
      this.edgeLayer,
      this.nodeLayer,
    );
  }

  /** Starts over at `id`. */
  async start(id) {
    this.nodes.clear();
    this.edges.clear();
    const node = await api("/v1/graph/nodes/" + seg(id));
    this.add(node.node_id, node.node_type, 0, 0);
    await this.expand(node.node_id);
    this.select(node.node_id);
  }

  add(id, type, x, y) {
    if (!this.nodes.has(id)) this.nodes.set(id, { id, type, x, y, expanded: false, cursor: null });
    return this.nodes.get(id);
  }

  /** Reads the next page of `id`'s edges and places its new neighbours around it. */
  async expand(id) {
    const n = this.nodes.get(id);
    if (!n || (n.expanded && !n.cursor)) return;
    const q = new URLSearchParams({ direction: "both", limit: String(PAGE) });
    if (n.cursor) q.set("cursor", n.cursor);
    const page = await api("/v1/graph/nodes/" + seg(id) + "/edges?" + q);
    n.expanded = true;
    n.cursor = page.next_cursor;
    const fresh = [];
    for (const e of page.edges) {
      this.edges.set(e.edge_id, e);
      const other = e.from_node === id ? e.to_node : e.from_node;
      if (!this.nodes.has(other)) fresh.push(other);
    }
    // Types of the new neighbours (one read each, a page at most).
    const types = await Promise.all(
      fresh.map((o) => api("/v1/graph/nodes/" + seg(o)).then((r) => r.node_type, () => "?")),
    );
    // The same neighbour twice in a page (two edges to it): placed once.
    const page1 = [...new Map(fresh.map((o, i) => [o, types[i]])).entries()];
    for (const [o, t, x, y] of this.place(n, page1)) this.add(o, t, x, y);
    this.draw();
  }

  /**
   * Places a page of new neighbours `fresh` ([[id, type]]) around `n`, once
   * the whole page is known: on rings of growing radius around it, evenly
   * spread over the places of a ring that are free (no box overlapping a
   * node already drawn, nor one placed before), starting away from the
   * centre. A later page takes the places left and the rings beyond.
   * Answers [[id, type, x, y]].
   */
  place(n, fresh) {
    const boxes = [...this.nodes.values()].map((m) => box(m.x, m.y, m.id, m.type));
    const out = [];
    let todo = fresh;
    const away = n.x === 0 && n.y === 0 ? -Math.PI / 2 : Math.atan2(n.y, n.x);
    for (let ring = 0; todo.length; ring++) {
      const r = RING0 + ring * RING_STEP;
      const slots = Math.max(8, Math.floor((2 * Math.PI * r) / SLOT));
      // The free places of this ring, in angle order from `away`.
      const free = [];
      for (let k = 0; k < slots; k++) {
        const a = away + (2 * Math.PI * k) / slots;
        const x = n.x + r * Math.cos(a), y = n.y + r * Math.sin(a);
        free.push([x, y]);
      }
      // Evenly spread: when the ring has more places than nodes left, every
      // (places / nodes)-th one; each checked against what is placed.
      const pick = free.length <= todo.length ? free : Array.from({ length: todo.length }, (_, i) => free[Math.floor((i * free.length) / todo.length)]);
      const rest = [];
      const tryAt = (spot, [id, type]) => {
        const b = box(spot[0], spot[1], id, type);
        if (!boxes.every((o) => apart(b, o))) return false;
        boxes.push(b);
        out.push([id, type, spot[0], spot[1]]);
        return true;
      };
      let i = 0;
      for (const node of todo) {
        let placed = false;
        while (i < pick.length && !placed) placed = tryAt(pick[i++], node);
        if (!placed) rest.push(node);
      }
      // Places of the ring skipped by the even spread, for those left.
      if (rest.length && pick !== free) {
        const left = [];
        for (const node of rest) {
          if (!free.some((spot) => !pick.includes(spot) && tryAt(spot, node) && pick.push(spot))) left.push(node);
        }
        todo = left;
      } else {
        todo = rest;
      }
      if (ring > 400) {
        // Never reached in practice: put the rest far out, in a row.
        todo.forEach(([id, type], k) => out.push([id, type, n.x + r + 60, n.y + k * 44]));
        break;
      }
    }
    return out;
  }

  async select(id) {
    this.selected = id;
    this.draw();
    const node = await api("/v1/graph/nodes/" + seg(id));
    this.onSelect(node, this.nodes.get(id));
  }

  draw() {
    this.edgeLayer.replaceChildren();
    this.nodeLayer.replaceChildren();
    let minX = -300, maxX = 300, minY = -200, maxY = 200;
    for (const n of this.nodes.values()) {
      const b = box(n.x, n.y, n.id, n.type);
      minX = Math.min(minX, b.x0 - 20); maxX = Math.max(maxX, b.x1 + 20);
      minY = Math.min(minY, b.y0 - 20); maxY = Math.max(maxY, b.y1 + 20);
    }
    const w = maxX - minX, hgt = maxY - minY;
    this.el.setAttribute("viewBox", `${minX} ${minY} ${w} ${hgt}`);
    // A drawing too large to fit at a readable size grows instead, and its
    // box scrolls (the page does not).
    this.el.classList.remove("big");
    this.el.removeAttribute("width");
    this.el.removeAttribute("height");
    const fit = Math.min(this.el.clientWidth / w, this.el.clientHeight / hgt);
    if (this.el.clientWidth && fit < SCALE_MIN) {
      this.el.classList.add("big");
      this.el.setAttribute("width", String(Math.round(w * SCALE_MIN)));
      this.el.setAttribute("height", String(Math.round(hgt * SCALE_MIN)));
    }
    for (const e of this.edges.values()) {
      const a = this.nodes.get(e.from_node), b = this.nodes.get(e.to_node);
      if (!a || !b) continue;
      this.edgeLayer.append(
        svg("g", { class: "edge" },
          svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, "marker-end": "url(#arrow)" }),
          svg("text", { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 - 4, "text-anchor": "middle", class: "edge-label" }, e.edge_type),
        ),
      );
    }
    for (const n of this.nodes.values()) {
      const more = !n.expanded || n.cursor ? " (press Enter to expand)" : "";
      const g = svg("g", {
        class: "node" + (n.id === this.selected ? " selected" : ""),
        tabindex: 0,
        role: "button",
        "data-node": n.id,
        "aria-label": `${n.type} ${visibleId(n.id)}${more}`,
        transform: `translate(${n.x},${n.y})`,
        onclick: () => this.activate(n.id),
        onkeydown: (ev) => {
          if (ev.key === "Enter" || ev.key === " ") {
            ev.preventDefault();
            this.activate(n.id);
          }
        },
      },
        svg("title", {}, `${n.type} ${visibleId(n.id)}`),
        svg("circle", { r: 16, fill: colourOf(n.type), class: n.expanded && !n.cursor ? "" : "unexpanded" }),
        svg("text", { x: 22, y: -2, class: "node-label" }, labelOf(n.id)),
        svg("text", { x: 22, y: 13, class: "node-type" }, n.type),
      );
      this.nodeLayer.append(g);
    }
  }

  async activate(id) {
    await this.expand(id);
    await this.select(id);
    const again = this.el.querySelector(`[data-node="${CSS.escape(id)}"]`);
    if (again) again.focus();
  }
}
