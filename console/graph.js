// The graph explorer: an SVG drawing of a node's neighbourhood. Nodes are
// coloured by type (with the type in the label too, not colour alone), edges
// carry their type, a click (or Enter) on a node selects it and expands its
// edges. Each expansion reads one page of edges: nothing loads the whole graph.

import { api, seg } from "./api.js";

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
    const r = n.x === 0 && n.y === 0 && this.nodes.size === 1 ? 230 : 150;
    const base = Math.atan2(n.y, n.x);
    fresh.forEach((o, i) => {
      const spread = this.nodes.size === 1 ? 2 * Math.PI : Math.PI * 1.2;
      const a = base - spread / 2 + (spread * (i + 0.5)) / Math.max(fresh.length, 1);
      this.add(o, types[i], n.x + r * Math.cos(a), n.y + r * Math.sin(a));
    });
    this.draw();
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
      minX = Math.min(minX, n.x - 120); maxX = Math.max(maxX, n.x + 160);
      minY = Math.min(minY, n.y - 60); maxY = Math.max(maxY, n.y + 60);
    }
    this.el.setAttribute("viewBox", `${minX} ${minY} ${maxX - minX} ${maxY - minY}`);
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
        "aria-label": `${n.type} ${n.id}${more}`,
        transform: `translate(${n.x},${n.y})`,
        onclick: () => this.activate(n.id),
        onkeydown: (ev) => {
          if (ev.key === "Enter" || ev.key === " ") {
            ev.preventDefault();
            this.activate(n.id);
          }
        },
      },
        svg("circle", { r: 16, fill: colourOf(n.type), class: n.expanded && !n.cursor ? "" : "unexpanded" }),
        svg("text", { x: 22, y: -2, class: "node-label" }, n.id.length > 28 ? n.id.slice(0, 27) + "…" : n.id),
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
