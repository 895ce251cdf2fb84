// Drives the operator console in headless Chromium (Debian's /usr/bin/chromium,
// through playwright-core: no browser download) against a running server.
// Started by tests/console.rs, which prepares the server and its data and
// checks the server's state afterwards. One browser for every scenario.
//
// env: BASE_URL, TOKEN, OUT_DIR (screenshots), CHROMIUM (default /usr/bin/chromium),
//      ATTEMPT (an attempt to invalidate), NODE_ID (a node to explore)
// Prints one line per scenario (`ok NAME ms` or `FAIL NAME: why`) and exits 1
// if any failed.

import { join } from "node:path";
import { BASE, TOKEN, OUT, newPage, scenario, check, signIn, finish } from "./lib.mjs";

const ATTEMPT = process.env.ATTEMPT;
const NODE_ID = process.env.NODE_ID;

// 1. A wrong token is refused with a clear message, and nothing else shows.
const wrong = await newPage();
await scenario("wrong-token", wrong, async () => {
  await signIn(wrong, "not-the-token");
  const msg = wrong.locator("#signin-message [role=alert]");
  await msg.waitFor();
  const text = await msg.textContent();
  check(/refused this token/.test(text) && /unknown token/.test(text), "message: " + text);
  check(await wrong.locator("#main").isHidden(), "the console shows nothing without a valid token");
  check((await wrong.evaluate(() => sessionStorage.getItem("leviathan.token"))) === null, "a refused token is not kept");
});

// 2. Sign in: the dashboard, with the head seq from the API.
const page = await newPage();
await scenario("sign-in-dashboard", page, async () => {
  await signIn(page, TOKEN);
  await page.locator("h1", { hasText: "Dashboard" }).waitFor();
  const head = await (await fetch(BASE + "/v1/log/head", { headers: { Authorization: "Bearer " + TOKEN } })).json();
  const shown = await page.locator("dl.facts dd").first().textContent();
  check(shown.trim() === String(head.seq), `head seq shown ${shown}, server ${head.seq}`);
  await page.locator("caption", { hasText: "Nodes by type" }).waitFor();
  check((await page.evaluate(() => sessionStorage.getItem("leviathan.token"))) !== null, "token in session storage");
  check((await page.evaluate(() => localStorage.length)) === 0, "nothing in local storage");
});

// 3. The live feed: an event ingested now appears within a second.
await scenario("live-feed", page, async () => {
  await page.click("nav a[href='#/feed']");
  await page.locator("#feed-status", { hasText: "live" }).waitFor();
  const id = "console-live-" + Date.now();
  const sent = Date.now();
  const r = await fetch(BASE + "/v1/events/ingest", {
    method: "POST",
    headers: { Authorization: "Bearer " + TOKEN, "Content-Type": "application/json" },
    body: JSON.stringify({ target: "radix", bundle_id: id, events: [{ event_id: id, event_type: "custom.note", timestamp: "2026-01-24T10:00:00Z", payload: { text: "hello" } }] }),
  });
  check(r.status === 200, "ingest answered " + r.status);
  await page.locator("#feed-rows a", { hasText: id }).waitFor({ timeout: 5000 });
  const ms = Date.now() - sent;
  check(ms < 1000, `the event took ${ms} ms to appear`);
  console.log(`  live event shown ${ms} ms after the ingest was sent`);
  // Pause: a new event does not appear; resume: it does, once.
  await page.click("#feed-pause");
  await page.locator("#feed-status", { hasText: "paused" }).waitFor();
  const id2 = id + "-b";
  await fetch(BASE + "/v1/events/ingest", {
    method: "POST",
    headers: { Authorization: "Bearer " + TOKEN, "Content-Type": "application/json" },
    body: JSON.stringify({ target: "radix", bundle_id: id2, events: [{ event_id: id2, event_type: "custom.note", timestamp: "2026-01-24T10:00:00Z", payload: {} }] }),
  });
  check((await page.locator("#feed-rows a", { hasText: id2 }).count()) === 0, "paused feed stays still");
  await page.click("#feed-pause");
  await page.locator("#feed-rows a", { hasText: id2 }).waitFor();
  check((await page.locator("#feed-rows a", { hasText: new RegExp("^" + id2 + "$") }).count()) === 1, "shown once after resume");
  // Click through to the event page.
  await page.locator("#feed-rows a", { hasText: new RegExp("^" + id + "$") }).click();
  await page.locator("h1", { hasText: "Event " + id }).waitFor();
  await page.locator("dt", { hasText: "hash" }).first().waitFor();
});

// 4. Attempts: open one, invalidate it through the dialog (dry run first).
await scenario("invalidate-attempt", page, async () => {
  await page.click("nav a[href='#/attempts']");
  await page.locator("caption", { hasText: "Attempts" }).waitFor();
  await page.locator(`a[href='#/attempts/${ATTEMPT}']`).first().click();
  await page.locator("h1", { hasText: "Attempt " + ATTEMPT }).waitFor();
  const before = await page.locator("#attempt-status").textContent();
  check(before.trim() !== "invalidated", "already invalidated");
  await page.click("#invalidate");
  const dialog = page.locator("#invalidate-dialog");
  await dialog.waitFor();
  check(await page.locator("#invalidate-confirm").isDisabled(), "cannot append before the dry run");
  await page.fill("#invalidate-reason", "flaky runner (browser test)");
  await page.click("#invalidate-preview-btn");
  const preview = page.locator("#invalidate-preview pre");
  await preview.waitFor();
  const planned = JSON.parse(await preview.textContent());
  check(planned.event_type === "attempt.invalidated", "dry-run event: " + JSON.stringify(planned));
  check(planned.payload.attempt_id === ATTEMPT && planned.payload.reason === "flaky runner (browser test)", "dry-run payload");
  await page.screenshot({ path: join(OUT, "invalidate-dialog.png") });
  await page.click("#invalidate-confirm");
  await page.locator("#attempt-status", { hasText: "invalidated" }).waitFor();
  await page.locator("[role=status]", { hasText: "Invalidated" }).waitFor();
});

// 5. The graph explorer: a node's neighbourhood, then expand a neighbour.
await scenario("graph-explorer", page, async () => {
  await page.goto(BASE + "/console#/graph/" + encodeURIComponent(NODE_ID));
  const start = page.locator(`g.node[data-node="${NODE_ID}"]`);
  await start.waitFor();
  await page.locator("aside.panel h2", { hasText: NODE_ID }).waitFor();
  const before = await page.locator("g.node").count();
  check(before >= 2, `neighbourhood drawn (${before} nodes)`);
  check((await page.locator("g.edge text").count()) >= 1, "edges labelled");
  // Expand the task (a neighbour with neighbours of its own), with the keyboard.
  const task = page.locator('g.node[data-node="t1"]');
  await task.focus();
  await page.keyboard.press("Enter");
  await page.locator("aside.panel h2", { hasText: "t1" }).waitFor();
  await page.waitForFunction((n) => document.querySelectorAll("g.node").length > n, before);
  const after = await page.locator("g.node").count();
  console.log(`  explorer: ${before} nodes, ${after} after expanding t1`);
  // Search by id.
  await page.fill("#graph-search", "radix");
  await page.press("#graph-search", "Enter");
  await page.locator('g.node[data-node="radix"]').waitFor();
});

// 6. Phone width: the dashboard fits without sideways scrolling.
const phone = await newPage({ width: 390, height: 844 });
await scenario("phone-dashboard", phone, async () => {
  await signIn(phone, TOKEN);
  await phone.locator("h1", { hasText: "Dashboard" }).waitFor();
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the page is ${overflow}px wider than the screen`);
});

// Nothing was blocked by the Content-Security-Policy, no script failed.
await finish();
