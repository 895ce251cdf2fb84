// The console's audit and projection views in headless Chromium, against a
// server that tests/console.rs prepared: a log, and a projector-set change
// whose build is pending with recorded errors.
//   1. dashboard-generation: the live generation, the build in progress (its
//      bar moving), then held back by its errors (state, progress, errors), projector modes, the chain verifier's
//      result, the latest signed checkpoint; WCAG AA contrast of the page.
//   2. projection-errors: the build's errors, linked from the dashboard.
//   3. node-history: a node's changes (as the API lists them) and the node as
//      of an earlier seq, driven from the keyboard; its artifact downloaded.
//   4. event-proof: the inclusion proof checked in the browser against the
//      latest checkpoint ("Verified against checkpoint of size N"), and the
//      same check refusing a tampered path or a wrong key.
//   5. audit-consistency: a checkpoint saved earlier checked against the
//      latest (RFC 9162 consistency proof, both signatures) in the browser;
//      a forged one refused; "Save this checkpoint" saves the note.
//
// env: BASE_URL, TOKEN, OUT_DIR, CHROMIUM, NODE_ID (a node with several
//      changes), LONG_HISTORY_NODE (one with more than 20), EVENT_ID (an event to prove), BUILD_GENERATION, BUILD_ERRORS

import { BASE, TOKEN, OUT, newPage, scenario, check, signIn, get, contrastFailures, finish } from "./lib.mjs";

const NODE_ID = process.env.NODE_ID;
const LONG = process.env.LONG_HISTORY_NODE;
const EVENT_ID = process.env.EVENT_ID;
const GEN = process.env.BUILD_GENERATION;
const ERRORS = Number(process.env.BUILD_ERRORS);

const page = await newPage();

async function noContrastFailures(what) {
  const bad = await contrastFailures(page);
  check(bad.length === 0, `${what}: text below WCAG AA contrast: ${JSON.stringify(bad.slice(0, 5))}`);
}

/** The contrast check finds what it must: grey #999 on white is 2.8:1. */
async function contrastCheckWorks() {
  await page.evaluate(() => {
    const s = document.createElement("span");
    s.id = "low-contrast-probe";
    s.textContent = "probe";
    s.style.color = "#999999";
    document.querySelector("main").append(s);
  });
  const bad = await contrastFailures(page);
  await page.evaluate(() => document.getElementById("low-contrast-probe").remove());
  check(bad.length === 1 && bad[0].text === "probe" && bad[0].ratio < 3, "the contrast check missed a 2.8:1 text: " + JSON.stringify(bad));
}

/** At phone width the page scrolls down, not sideways. */
async function fitsAPhone(what) {
  await page.setViewportSize({ width: 390, height: 844 });
  try {
    await page.waitForFunction(() => window.innerWidth === 390);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `${what}: ${overflow}px wider than a phone's screen`);
  } finally {
    await page.setViewportSize({ width: 1280, height: 900 });
  }
}

await scenario("dashboard-generation", page, async () => {
  await signIn(page, TOKEN);
  await page.locator("h1", { hasText: "Dashboard" }).waitFor();
  // The build in progress (the server builds at 100 events/s): its state, and
  // a progress bar that moves as the page polls.
  const build = page.locator("#dash-build");
  await page.locator("#dash-build-state", { hasText: "building" }).waitFor({ timeout: 20000 });
  const headSeq = (await get("/v1/log/head")).seq;
  const v0 = Number(await build.locator("progress").getAttribute("value"));
  check(Number(await build.locator("progress").getAttribute("max")) === headSeq, "progress toward the head");
  check(v0 < headSeq, `the build is not done yet: ${v0} of ${headSeq}`);
  await page.waitForFunction((v) => {
    const p = document.querySelector("#dash-build progress");
    return p && Number(p.getAttribute("value")) > v && document.querySelector("#dash-build-state").textContent === "building";
  }, v0);
  check(/seq [0-9,]+ of [0-9,]+ \([0-9]+ %\)/.test(await build.innerText()), "progress in words");
  await page.screenshot({ path: OUT + "/dashboard-building.png", fullPage: true });
  // Then held back by its errors.
  await page.locator("#dash-build-state", { hasText: "pending" }).waitFor({ timeout: 60000 });
  const pr = await get("/v1/projection");
  // The live generation and its projectors, with their error policy.
  await page.locator("#dash-generation", { hasText: String(pr.generation) }).waitFor();
  check((await page.locator("#dash-applied-seq").textContent()) === String(pr.applied_seq), "applied seq");
  const row = page.locator("table:has(caption:text('Projectors of the live generation')) tbody tr").first();
  const cells = await row.locator("td").allTextContents();
  check(cells[0] === "core" && cells[1] === pr.projectors[0].version && cells[3] === "reject", "projector row: " + cells.join(" | "));
  // The build held back by its errors.
  const b = pr.build;
  check(b && String(b.generation) === GEN && b.state === "pending", "the server reports the pending build: " + JSON.stringify(b));
  const text = await build.innerText();
  check(text.includes(`seq ${b.applied_seq.toLocaleString("en-US")} of ${b.head_seq.toLocaleString("en-US")}`), "progress: " + text);
  check(text.includes(`${ERRORS} (at most 0 allowed)`), "errors: " + text);
  check(text.includes("refuser@"), "the build's projectors: " + text);
  const progress = build.locator("progress");
  check(Number(await progress.getAttribute("value")) === b.applied_seq && Number(await progress.getAttribute("max")) === b.head_seq, "progress bar");
  // The background verifier's result and the latest checkpoint.
  const v = await get("/v1/log/verification");
  await page.locator("#dash-verification", { hasText: `seq 1 to ${v.verified_seq.toLocaleString("en-US")} verified` }).waitFor();
  const cp = await get("/v1/log/checkpoint", true);
  const size = cp.split("\n")[1];
  await page.locator("#dash-checkpoint-size", { hasText: size }).waitFor();
  const rootHex = Buffer.from(cp.split("\n")[2], "base64").toString("hex");
  check((await page.locator("#dash-checkpoint").innerText()).includes(rootHex), "checkpoint root shown in hex");
  await contrastCheckWorks();
  await noContrastFailures("dashboard");
  await fitsAPhone("dashboard");
});

await scenario("projection-errors", page, async () => {
  await page.locator(`#dash-build a[href='#/errors?generation=${GEN}']`).click();
  await page.locator("h1", { hasText: "Projection errors" }).waitFor();
  const api = await get(`/v1/projection/errors?generation=${GEN}&limit=50`);
  const rows = page.locator("main table tbody tr");
  await page.locator("main table caption", { hasText: `generation ${GEN}` }).waitFor();
  check((await rows.count()) === api.errors.length && api.errors.length === ERRORS, `rows ${await rows.count()}, api ${api.errors.length}, expected ${ERRORS}`);
  const first = await rows.first().locator("td").allTextContents();
  check(first[0] === String(api.errors[0].seq) && first[2] === "refuser" && first[3] === "rejected", "first row: " + first.join(" | "));
  await noContrastFailures("errors page");
  await page.screenshot({ path: OUT + "/projection-errors-list.png", fullPage: true });
  // Each error links to its event.
  await rows.first().locator(`a[href='#/seq/${api.errors[0].seq}']`).click();
  await page.locator("dd", { hasText: String(api.errors[0].event_id) }).first().waitFor();
});

await scenario("node-history", page, async () => {
  await page.goto(BASE + "/console#/graph/" + encodeURIComponent(NODE_ID));
  const hist = await get(`/v1/graph/nodes/${encodeURIComponent(NODE_ID)}/history?limit=20`);
  check(hist.changes.length >= 3, "the node has several changes: " + hist.changes.length);
  const rows = page.locator("#history-rows tr");
  await page.locator(`#history-rows tr[data-seq="${hist.changes[hist.changes.length - 1].seq}"]`).waitFor();
  check((await rows.count()) === hist.changes.length, `${await rows.count()} rows for ${hist.changes.length} changes`);
  for (let i = 0; i < hist.changes.length; i++) {
    const c = hist.changes[i];
    const cells = await rows.nth(i).locator("td").allTextContents();
    check(cells[0] === String(c.seq) && cells[1] === c.event_id + c.event_type && cells[2] === `${c.op.op}by ${c.projector}`, `row ${i}: ${cells.join(" | ")}`);
  }
  // The artifact it produced, downloaded through the API with the token:
  // the bytes the server holds.
  const dl = page.locator("#node-artifacts button", { hasText: "Download" });
  const [download] = await Promise.all([page.waitForEvent("download"), dl.click()]);
  const path = await download.path();
  const bytes = (await import("node:fs")).readFileSync(path, "utf8");
  check(bytes === NODE_ID, `downloaded ${JSON.stringify(bytes)} as ${download.suggestedFilename()}`);
  // As of the first change, from the keyboard: the node as it was then.
  const first = hist.changes[0];
  await rows.first().locator("button").focus();
  await page.keyboard.press("Enter");
  await page.locator("#as-of-title", { hasText: `as of seq ${first.seq}` }).waitFor();
  const then = await get(`/v1/graph/nodes/${encodeURIComponent(NODE_ID)}?as_of_seq=${first.seq}`);
  const shown = JSON.parse(await page.locator("#as-of pre").textContent());
  check(JSON.stringify(shown) === JSON.stringify(then.properties), "as-of properties are the API's");
  check(JSON.stringify(then.properties) === JSON.stringify(first.node.properties), "the API's as-of node is the first change's");
  const now = await get(`/v1/graph/nodes/${encodeURIComponent(NODE_ID)}`);
  check(now.properties.status !== then.properties.status, "the status changed since");
  check((await page.locator("#as-of table").innerText()).includes("status"), "the changed status is listed");
  // Typed: seq 0 is before the node existed.
  await page.fill("#as-of-seq", "0");
  await page.press("#as-of-seq", "Enter");
  await page.locator("#as-of", { hasText: "did not exist as of seq 0" }).waitFor();
  await noContrastFailures("explorer");
  await fitsAPhone("explorer");
  // A longer history comes a page at a time: 20, then the rest.
  const long = await get(`/v1/graph/nodes/${encodeURIComponent(LONG)}/history?limit=1000`);
  check(long.changes.length > 20, "the long history is longer than a page: " + long.changes.length);
  await page.goto(BASE + "/console#/graph/" + encodeURIComponent(LONG));
  await page.locator("aside.panel h2", { hasText: LONG }).waitFor();
  await page.locator("#history-rows tr").nth(19).waitFor();
  check((await rows.count()) === 20, `first page: ${await rows.count()} rows`);
  await page.click("#history-more");
  await page.locator(`#history-rows tr[data-seq="${long.changes[long.changes.length - 1].seq}"]`).waitFor();
  check((await rows.count()) === long.changes.length, `all pages: ${await rows.count()} rows for ${long.changes.length}`);
  check((await page.locator("#history-more").count()) === 0, "no more pages");
});

await scenario("event-proof", page, async () => {
  await page.goto(BASE + "/console#/events/" + encodeURIComponent(EVENT_ID));
  // A reload keeps the tab signed in (the token is in its session storage).
  await page.reload();
  const status = page.locator("#proof-status");
  await page.locator("#proof-status", { hasText: /Verified against checkpoint of size|NOT verified|Not checked/ }).waitFor();
  const verdict = await status.textContent();
  const cp = await get("/v1/log/checkpoint", true);
  const size = Number(cp.split("\n")[1]);
  const ev = await get("/v1/events/" + encodeURIComponent(EVENT_ID));
  check(verdict.startsWith(`Verified against checkpoint of size ${size}: seq ${ev.seq} is leaf ${ev.seq - 1}`) && verdict.includes("signature checked"), "verdict: " + verdict);
  const proof = await get(`/v1/events/${encodeURIComponent(EVENT_ID)}/proof?tree_size=${size}`);
  check((await page.locator("#proof-tree-size").textContent()) === String(size), "tree size shown");
  check((await page.locator("table:has(caption:text('Audit path')) tbody tr").count()) === proof.path.length, "every path hash shown");
  for (const c of await page.locator("#proof-checks tbody tr td:nth-child(2)").allTextContents()) check(c === "passed", "a check did not pass: " + c);
  // The same code refuses what it must: a flipped path hash, a leaf of
  // another index, another key.
  const refusals = await page.evaluate(async ([id]) => {
    const m = await import("/console/proof.js");
    const h = { Authorization: "Bearer " + sessionStorage.getItem("leviathan.token") };
    const bundle = await (await fetch(`/v1/events/${encodeURIComponent(id)}/bundle`, { headers: h })).json();
    const event = await (await fetch(`/v1/events/${encodeURIComponent(id)}`, { headers: h })).json();
    const key = await (await fetch("/v1/log/public-key", { headers: h })).text();
    const good = await m.verifyBundle(bundle, event, key);
    const flip = structuredClone(bundle);
    flip.proof.path[0] = (flip.proof.path[0][0] === "0" ? "1" : "0") + flip.proof.path[0].slice(1);
    const moved = structuredClone(bundle);
    moved.proof.leaf_index = (moved.proof.leaf_index + 1) % moved.proof.tree_size;
    const record = structuredClone(bundle);
    record.record = record.record.replace('"seq":', '"seq": ');
    const [k1, k2, k3] = key.trim().split("+");
    const otherKey = `${k1}+${k2}+${btoa(String.fromCharCode(1, ...new Uint8Array(32).fill(7)))}`;
    return {
      good: good.ok,
      flip: (await m.verifyBundle(flip, event, key)).included,
      moved: (await m.verifyBundle(moved, event, key)).included,
      record: (await m.verifyBundle(record, event, key)).included,
      otherKey: (await m.verifyBundle(bundle, event, otherKey)).signed,
      unused: k3.length > 0,
    };
  }, [EVENT_ID]);
  check(refusals.good === true && refusals.flip === false && refusals.moved === false && refusals.record === false && refusals.otherKey === false, "refusals: " + JSON.stringify(refusals));
  // A wrong key typed into the page: the page says the signature did not check.
  const key = (await get("/v1/log/public-key", true)).trim();
  const [n, id] = key.split("+");
  await page.fill("#verifier-key", `${n}+${id}+${Buffer.from([1, ...new Array(32).fill(9)]).toString("base64")}`);
  await page.click("#verifier-key ~ button[type=submit]");
  await page.locator("#proof-status", { hasText: "did NOT check" }).waitFor();
  await page.fill("#verifier-key", key);
  await page.press("#verifier-key", "Enter");
  await page.locator("#proof-status", { hasText: "signature checked" }).waitFor();
  await noContrastFailures("event page");
  await fitsAPhone("event page");
});

await scenario("audit-consistency", page, async () => {
  // A checkpoint "saved earlier": the server signs one of the first 10 records.
  const saved = await get("/v1/log/checkpoint?tree_size=10", true);
  // From the keyboard (g then u), and from the dashboard's checkpoint.
  await page.goto(BASE + "/console#/errors");
  await page.locator("h1", { hasText: "Projection errors" }).waitFor();
  await page.keyboard.press("g");
  await page.keyboard.press("u");
  await page.locator("h1", { hasText: "Audit" }).waitFor();
  await page.goto(BASE + "/console#/");
  await page.locator("#dash-checkpoint a[href='#/audit']").click();
  await page.locator("h1", { hasText: "Audit" }).waitFor();
  const latest = await get("/v1/log/checkpoint", true);
  const size = latest.split("\n")[1];
  await page.locator("#audit-latest-size", { hasText: size }).waitFor();
  // "Save this checkpoint" saves the signed note as served.
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#save-checkpoint")]);
  const text = (await import("node:fs")).readFileSync(await download.path(), "utf8");
  check(text === latest && download.suggestedFilename() === `checkpoint-${size}.txt`, "the saved checkpoint: " + download.suggestedFilename());
  // The saved one against the latest: consistent, both signed.
  await page.fill("#saved-checkpoint", saved);
  await page.click("#growth-check");
  const status = page.locator("#growth-status");
  await page.locator("#growth-status", { hasText: /The log only grew|NOT/ }).waitFor();
  const verdict = await status.textContent();
  check(verdict.startsWith(`The log only grew: the checkpoint of size 10 you saved is a prefix of the latest checkpoint, of size ${size}`), "verdict: " + verdict);
  for (const c of await page.locator("#growth-checks tbody tr td:nth-child(2)").allTextContents()) check(c === "passed", "a check did not pass: " + c);
  await page.screenshot({ path: OUT + "/audit-consistency-ok.png", fullPage: true });
  // A forged history: the same size, another root. Its signature fails, and
  // so does the proof.
  const lines = saved.split("\n");
  lines[2] = Buffer.alloc(32, 7).toString("base64");
  await page.fill("#saved-checkpoint", lines.join("\n"));
  await page.click("#growth-check");
  await page.locator("#growth-status", { hasText: "NOT verified" }).waitFor();
  const failed = await page.locator("#growth-checks tbody tr").evaluateAll((trs) =>
    trs.filter((tr) => tr.cells[1].textContent === "FAILED").map((tr) => tr.cells[0].textContent));
  check(failed.includes("saved checkpoint's signature") && failed.includes("consistency proof (RFC 9162 §2.1.4.2)"), "failed checks: " + failed.join(", "));
  await noContrastFailures("audit page");
  await fitsAPhone("audit page");
});

await finish();
