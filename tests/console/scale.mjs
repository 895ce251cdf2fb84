// What each console view costs against a large log: for every view, the v1
// requests the page made (count, bytes, the largest answer), the time until
// it showed what it is for, and its DOM size. Started by tests/console.rs
// (the_console_views_stay_small_at_scale, on demand), which runs it twice, at
// two log sizes, and compares: a view that pages or streams costs the same at
// both; one that loads the log or the graph grows with it.
//
// env: BASE_URL, TOKEN, OUT_DIR, CHROMIUM, LABEL (the JSON file's name)
// Writes OUT_DIR/LABEL.json: {head_seq, views: {name: {requests, bytes,
// largest, largest_url, ms, dom}}}, and prints a table.

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { BASE, TOKEN, OUT, newPage, scenario, check, signIn, get, finish } from "./lib.mjs";

const LABEL = process.env.LABEL;
const page = await newPage();
const head = await get("/v1/log/head");
const target = (await get("/v1/graph/nodes?type=Target&limit=1")).nodes[0].node_id;
const task = (await get("/v1/graph/nodes?type=Task&limit=1")).nodes[0].node_id;
const attempt = (await get("/v1/attempts?limit=1")).attempts[0].attempt_id;
const firstEvent = (await get("/v1/events?after_seq=0&limit=1")).events[0].event_id;

const views = [
  ["dashboard", "#/", async () => page.locator("#dash-checkpoint-size").waitFor()],
  ["feed", "#/feed", async () => page.locator("#feed-status", { hasText: "live" }).waitFor()],
  ["attempts", "#/attempts", async () => page.locator("main table caption", { hasText: "Attempts" }).waitFor()],
  ["attempt", "#/attempts/" + encodeURIComponent(attempt), async () => page.locator("#attempt-status").waitFor()],
  ["graph-target", "#/graph/" + encodeURIComponent(target), async () => {
    await page.locator("#history-rows tr").first().waitFor();
    await page.waitForFunction(() => document.querySelectorAll("g.node").length > 1);
  }],
  ["graph-task", "#/graph/" + encodeURIComponent(task), async () => {
    await page.locator("#history-rows tr").first().waitFor();
    await page.waitForFunction(() => document.querySelectorAll("g.node").length > 1);
  }],
  ["graph-attempt-history", "#/graph/" + encodeURIComponent(attempt), async () => {
    await page.locator("#history-rows tr").first().waitFor();
    await page.locator("#node-artifacts table").waitFor();
  }],
  ["event-first", "#/events/" + encodeURIComponent(firstEvent), async () => page.locator("#proof-status", { hasText: "Verified against checkpoint" }).waitFor()],
  ["event-head", "#/seq/" + head.seq, async () => page.locator("#proof-status", { hasText: "Verified against checkpoint" }).waitFor()],
  ["errors", "#/errors", async () => page.locator("h1", { hasText: "Projection errors" }).waitFor()],
  ["audit-consistency", "#/audit", async () => {
    await page.locator("#audit-latest-size").waitFor();
    await page.fill("#saved-checkpoint", await get("/v1/log/checkpoint?tree_size=10", true));
    await page.click("#growth-check");
    await page.locator("#growth-status", { hasText: "The log only grew" }).waitFor();
  }],
];

const results = { head_seq: head.seq, views: {} };
await signIn(page, TOKEN);
await page.locator("h1", { hasText: "Dashboard" }).waitFor();
await scenario("scale-" + LABEL, page, async () => {
  for (const [name, hash, ready] of views) {
    // A fresh document per view, so that the resource timings are this view's.
    await page.goto("about:blank");
    const t = Date.now();
    await page.goto(BASE + "/console" + hash);
    await ready();
    const ms = Date.now() - t;
    await page.waitForTimeout(300); // let the page's secondary reads land, so that they are counted
    const r = await page.evaluate(() => {
      const api = performance.getEntriesByType("resource").filter((e) => new URL(e.name).pathname.startsWith("/v1/"));
      let largest = null;
      for (const e of api) if (!largest || e.encodedBodySize > largest.encodedBodySize) largest = e;
      return {
        requests: api.length,
        bytes: api.reduce((n, e) => n + e.encodedBodySize, 0),
        largest: largest ? largest.encodedBodySize : 0,
        largest_url: largest ? new URL(largest.name).pathname + new URL(largest.name).search : null,
        dom: document.getElementsByTagName("*").length,
      };
    });
    results.views[name] = { ...r, ms };
    console.log(`  ${LABEL} ${name.padEnd(22)} ${String(r.requests).padStart(3)} requests ${String(r.bytes).padStart(8)} bytes (largest ${r.largest}: ${r.largest_url}) ${ms} ms, ${r.dom} elements`);
  }
  check(Object.keys(results.views).length === views.length, "every view measured");
});
writeFileSync(join(OUT, LABEL + ".json"), JSON.stringify(results, null, 2));
await finish();
