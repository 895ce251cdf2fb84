// What a black-box tester found, each as a scenario that fails on the
// console before its fix (tests/console.rs prepares the server: a task with
// 85 attempts, events with ids `recent`, `stream` and `ingest`, a 255-char
// event id, a 250-char attempt id, ids with a bidi override and a zero-width
// space).
//
// env: BASE_URL, TOKEN, OUT_DIR, CHROMIUM, LONG_EVENT, LONG_ATTEMPT, BUSY_NODE

import { BASE, TOKEN, newPage, scenario, check, signIn, get, finish } from "./lib.mjs";

const LONG_EVENT = process.env.LONG_EVENT;
const LONG_ATTEMPT = process.env.LONG_ATTEMPT;
const BUSY = process.env.BUSY_NODE;
const RTL = "\u202eRTL-override-txt.exe";
const ZW = "a1\u200b";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const page = await newPage();
// CONSOLE_FROM_DIR (a directory of console files, e.g. an older version):
// the browser gets those instead of the served ones, to see these
// scenarios fail against the console before its fixes.
if (process.env.CONSOLE_FROM_DIR) {
  const { readFileSync } = await import("node:fs");
  await page.context().route(/\/console\/[a-z]+\.(js|css)$/, (route) => {
    const name = new URL(route.request().url()).pathname.split("/").pop();
    route.fulfill({ contentType: name.endsWith(".js") ? "text/javascript" : "text/css", body: readFileSync(process.env.CONSOLE_FROM_DIR + "/" + name, "utf8") });
  });
}
const requests = []; // every request the page made: [method, url]
page.on("request", (r) => requests.push([r.method(), r.url()]));
const v1 = (re) => requests.filter(([, u]) => re.test(new URL(u).pathname));

async function overflow(p = page) {
  return p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}

async function h1() {
  return (await page.locator("main h1").textContent()).trim();
}

async function go(hash) {
  await page.goto(BASE + "/console" + hash);
}

// 1. "Skip to content" moves the focus, not the route: on the sign-in form
//    and on a page.
await scenario("skip-link", page, async () => {
  await page.goto(BASE + "/console");
  await page.locator("#token").waitFor();
  check(await page.evaluate(() => document.querySelector("a, button, input, [tabindex]").classList.contains("skip")), "the skip link comes first");
  await page.locator("a.skip").focus();
  await page.keyboard.press("Enter");
  check((await page.evaluate(() => location.hash)) === "", "the hash did not change: " + (await page.evaluate(() => location.hash)));
  check((await page.evaluate(() => document.activeElement.id)) === "signin", "the focus is on the sign-in content");
  await page.fill("#token", TOKEN);
  await page.click("#signin-form button[type=submit]");
  await page.locator("main h1", { hasText: "Dashboard" }).waitFor();
  await page.locator("a.skip").focus();
  await page.keyboard.press("Enter");
  await sleep(300);
  check((await page.evaluate(() => location.hash)) === "", "still no hash");
  check((await h1()) === "Dashboard", "still the dashboard: " + (await h1()));
  check((await page.evaluate(() => document.activeElement.id)) === "main", "the focus is on <main>");
  // From another page: that page stays.
  await go("#/attempts");
  await page.locator("main h1", { hasText: "Attempts" }).waitFor();
  await page.locator("a.skip").focus();
  await page.keyboard.press("Enter");
  await sleep(300);
  check((await page.evaluate(() => location.hash)) === "#/attempts" && (await h1()) === "Attempts", "the attempts page stays");
  check((await page.evaluate(() => document.activeElement.id)) === "main", "the focus is on <main>");
});

// 2. A malformed percent-encoding: a page that says so, not a blank page.
await scenario("malformed-address", page, async () => {
  if (await page.locator("#main").isHidden()) await signIn(page, TOKEN);
  for (const hash of ["#/attempts/%", "#/graph/%E0%A4%A", "#/events/%zz"]) {
    await go("#/");
    await page.locator("main h1", { hasText: "Dashboard" }).waitFor();
    await go(hash);
    await page.locator("main h1", { hasText: "Not a valid address" }).waitFor();
    check((await page.locator("main").innerText()).includes("malformed percent-encoding"), hash + ": the reason");
  }
});

// 3. Events whose ids are other routes under /v1/events: found through
//    their proof, shown and proved; /v1/events/{id} never asked.
await scenario("shadowed-event-ids", page, async () => {
  for (const id of ["recent", "stream", "ingest"]) {
    const proof = await get(`/v1/events/${id}/proof`);
    const before = requests.length;
    await go("#/events/" + id);
    await page.locator("main h1", { hasText: "Event " + id }).waitFor();
    await page.locator("#proof-status", { hasText: /Verified against|NOT|Not checked/ }).waitFor();
    const verdict = await page.locator("#proof-status").textContent();
    check(verdict.startsWith(`Verified against checkpoint of size`) && verdict.includes(`seq ${proof.seq} is leaf ${proof.seq - 1}`), id + ": " + verdict);
    const seq = await page.locator("dl.facts dd").first().textContent();
    check(seq === String(proof.seq), `${id}: seq ${seq}, the API says ${proof.seq}`);
    const asked = requests.slice(before).map(([, u]) => new URL(u).pathname);
    check(!asked.includes("/v1/events/" + id) && !asked.some((p) => p.includes("undefined")), id + ": asked " + asked.join(" "));
    check(!asked.includes("/v1/events/stream"), id + ": a stream was opened");
  }
});

// 4. The last event offers no "next" link; the one before does.
await scenario("last-event-has-no-next", page, async () => {
  const head = (await get("/v1/log/head")).seq;
  await go("#/seq/" + head);
  await page.locator("#proof-status", { hasText: /Verified|NOT/ }).waitFor();
  check((await page.locator("main a", { hasText: `seq ${head + 1} →` }).count()) === 0, "a link past the head");
  await page.locator("main", { hasText: "the last event of the log" }).waitFor();
  const last = (await get(`/v1/events?after_seq=${head - 1}&limit=1`)).events[0];
  await go("#/events/" + encodeURIComponent(last.event_id));
  await page.locator("#proof-status", { hasText: /Verified|NOT/ }).waitFor();
  check((await page.locator("main a", { hasText: `seq ${head + 1} →` }).count()) === 0, "a link past the head (by id)");
  await go("#/seq/" + (head - 1));
  await page.locator("main a", { hasText: `seq ${head} →` }).waitFor();
});

// 5. Long ids break or are cut: no sideways scrolling at 1280 px or 390 px.
await scenario("long-ids", page, async () => {
  const views = [
    ["#/events/" + encodeURIComponent(LONG_EVENT), "Event"],
    ["#/attempts", "Attempts"],
    ["#/attempts/" + encodeURIComponent(LONG_ATTEMPT), "Attempt"],
    ["#/graph/" + encodeURIComponent(LONG_ATTEMPT), "Graph explorer"],
    ["#/feed", "Live events"],
  ];
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: 900 });
    for (const [hash, heading] of views) {
      await go(hash);
      await page.locator("main h1", { hasText: heading }).waitFor();
      if (hash.startsWith("#/graph")) await page.locator("aside.panel h2").waitFor();
      if (hash === "#/attempts") await page.locator("main table a", { hasText: LONG_ATTEMPT.slice(0, 20) }).waitFor();
      await sleep(200);
      const o = await overflow();
      check(o <= 1, `${hash.slice(0, 40)} at ${width} px: ${o} px wider than the window`);
    }
  }
  await page.setViewportSize({ width: 1280, height: 900 });
  // A cut id keeps the whole id in its title.
  await go("#/attempts");
  const a = page.locator("main table a", { hasText: LONG_ATTEMPT.slice(0, 20) });
  check((await a.getAttribute("title")) === LONG_ATTEMPT, "the whole id in the title");
});

// 6. Invisible and bidi characters of ids are shown, isolated.
await scenario("bidi-ids", page, async () => {
  await go("#/events/" + encodeURIComponent(RTL));
  await page.locator("main h1 bdi").waitFor();
  const t = await h1();
  check(t === "Event \\u{202E}RTL-override-txt.exe", "heading: " + JSON.stringify(t));
  await go("#/events/" + encodeURIComponent(ZW));
  await page.locator("main h1 bdi").waitFor();
  check((await h1()) === "Event a1\\u{200B}", "heading: " + JSON.stringify(await h1()));
  // In a list: the feed's rows.
  await go("#/feed");
  await page.locator("#feed-status", { hasText: "live" }).waitFor();
  const cells = await page.locator("#feed-rows a.id-link").allTextContents();
  check(cells.includes("\\u{202E}RTL-override-txt.exe") && cells.includes("a1\\u{200B}"), "feed: " + JSON.stringify(cells.slice(0, 12)));
  const raw = await page.evaluate(() => /[\u200b\u202e]/.test(document.querySelector("main").textContent));
  check(!raw, "an invisible or bidi character is in the page's text");
});

/** Pairs of drawn nodes whose boxes (circle and labels) overlap. */
async function overlaps() {
  return page.evaluate(() => {
    const rs = [...document.querySelectorAll("g.node")].map((g) => [g.dataset.node, g.getBoundingClientRect()]);
    const out = [];
    for (let i = 0; i < rs.length; i++) {
      for (let j = i + 1; j < rs.length; j++) {
        const [a, ra] = rs[i];
        const [b, rb] = rs[j];
        const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
        const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
        if (w > 0.5 && h > 0.5) out.push(a + " & " + b);
      }
    }
    return { nodes: rs.length, out };
  });
}

// 7. A node with more than two pages of edges: its neighbours spread
//    without overlapping, and so does the next page.
await scenario("graph-layout", page, async () => {
  await go("#/graph/" + BUSY);
  await page.locator("aside.panel h2", { hasText: BUSY }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll("g.node").length >= 41);
  let o = await overlaps();
  check(o.nodes === 41 && o.out.length === 0, `first page: ${o.nodes} nodes, overlapping: ${o.out.slice(0, 5).join(", ")} (${o.out.length})`);
  await page.locator("aside.panel button", { hasText: "Load more edges" }).click();
  await page.waitForFunction(() => document.querySelectorAll("g.node").length >= 81);
  o = await overlaps();
  check(o.nodes === 81 && o.out.length === 0, `second page: ${o.nodes} nodes, overlapping: ${o.out.slice(0, 5).join(", ")} (${o.out.length})`);
  // Labels are cut, the whole id in a tooltip.
  const labels = await page.locator("g.node text.node-label").allTextContents();
  check(labels.every((l) => l.length <= 24), "a label longer than 24 characters");
  check((await page.locator("g.node > title").count()) === 81, "a tooltip per node");
  check((await overflow()) <= 1, "the page scrolls sideways");
});

// 8. A stream the server refuses (422: a bad type filter): its message
//    stays, and the feed does not retry.
await scenario("feed-refused", page, async () => {
  const r = await fetch(BASE + "/v1/events/stream?type=Bad*", { headers: { Authorization: "Bearer " + TOKEN } });
  check(r.status === 422, "the API refuses the filter: " + r.status);
  const message = (await r.json()).error.message;
  const before = v1(/^\/v1\/events\/stream$/).length;
  await go("#/feed?type=" + encodeURIComponent("Bad*"));
  const status = page.locator("#feed-status");
  await page.locator("#feed-status", { hasText: "refused" }).waitFor();
  await sleep(3000);
  const text = await status.textContent();
  check(text.includes(message) && text.includes("422"), "status: " + text);
  const tries = v1(/^\/v1\/events\/stream$/).length - before;
  check(tries === 1, `${tries} stream requests for one refusal`);
});

// 9. 503 too_many_streams: retried with a growing delay, the reason shown;
//    the stream answering 401: back to the sign-in.
await scenario("feed-busy-and-signed-out", page, async () => {
  let busy = 0;
  await page.route("**/v1/events/stream**", (route) => {
    busy++;
    route.fulfill({ status: 503, contentType: "application/json", headers: { "Retry-After": "1" }, body: JSON.stringify({ error: { code: "too_many_streams", message: "too many event streams are open (at most 64)" } }) });
  });
  await go("#/feed");
  await page.locator("#feed-status", { hasText: "too many event streams" }).waitFor();
  check(/reconnecting in [0-9.]+ s/.test(await page.locator("#feed-status").textContent()), "the retry is announced");
  await sleep(3500);
  check(busy >= 2 && busy <= 5, `${busy} tries in 3.5 s (a growing delay)`);
  await page.unroute("**/v1/events/stream**");
  await page.locator("#feed-status", { hasText: "live" }).waitFor({ timeout: 15000 });
  // The token stops working while the stream is open: the stream ends and
  // its reconnect is refused with 401.
  await page.route("**/v1/events/stream**", (route) =>
    route.fulfill({ status: 401, contentType: "application/json", body: JSON.stringify({ error: { code: "unauthorized", message: "unknown token" } }) }));
  await go("#/");
  await page.locator("main h1", { hasText: "Dashboard" }).waitFor();
  await go("#/feed");
  await page.locator("#signin-message", { hasText: "refused the token" }).waitFor();
  check(await page.locator("#main").isHidden(), "the pages are hidden");
  await page.unroute("**/v1/events/stream**");
  await signIn(page, TOKEN);
  await page.locator("main h1", { hasText: "Dashboard" }).waitFor();
});

// 10. Leaving the feed before its first events arrived: no stream is left
//     open behind the next page.
await scenario("feed-left-early", page, async () => {
  await go("#/");
  await page.locator("main h1", { hasText: "Dashboard" }).waitFor();
  await page.route("**/v1/events/recent**", async (route) => {
    await sleep(1500);
    await route.continue();
  });
  const before = v1(/^\/v1\/events\/stream$/).length;
  await page.evaluate(() => (location.hash = "#/feed"));
  await page.locator("main h1", { hasText: "Live events" }).waitFor();
  await page.evaluate(() => (location.hash = "#/attempts"));
  await page.locator("main h1", { hasText: "Attempts" }).waitFor();
  await sleep(2500);
  await page.unroute("**/v1/events/recent**");
  check(v1(/^\/v1\/events\/stream$/).length === before, "a stream was opened for a page already left");
  check((await h1()) === "Attempts", "the attempts page stays: " + (await h1()));
});

// 11. A switch to another projector set: the dashboard's projectors table
//     follows (the API's answer is changed in flight, as a switch would).
await scenario("projector-set-switch", page, async () => {
  await go("#/");
  await page.locator("main h1", { hasText: "Dashboard" }).waitFor();
  const row = page.locator("table:has(caption:text('Projectors of the live generation')) tbody tr").first();
  check((await row.locator("td").first().textContent()) === "core", "core first");
  await page.route("**/v1/projection", async (route) => {
    const resp = await route.fetch();
    const j = await resp.json();
    j.generation += 1;
    j.fingerprint = "f".repeat(64);
    j.projectors = [{ ...j.projectors[0], name: "switched", version: "9.9.9" }];
    await route.fulfill({ response: resp, json: j });
  });
  await page.locator("#dash-generation", { hasText: "1" }).waitFor({ timeout: 6000 });
  await page.locator("table:has(caption:text('Projectors of the live generation')) td", { hasText: "switched" }).waitFor({ timeout: 6000 });
  check((await row.locator("td").nth(1).textContent()) === "9.9.9", "the new set's version");
  await page.unroute("**/v1/projection");
  await page.locator("table:has(caption:text('Projectors of the live generation')) td", { hasText: /^core$/ }).waitFor({ timeout: 6000 });
});

// 12. The server unreachable: a banner says since when; it goes when the
//     server answers again.
await scenario("server-unreachable", page, async () => {
  await go("#/");
  await page.locator("main h1", { hasText: "Dashboard" }).waitFor();
  check(await page.locator("#unreachable").isHidden(), "no banner while the server answers");
  await page.route("**/v1/**", (route) => route.abort("connectionrefused"));
  await page.locator("#unreachable", { hasText: "The server is unreachable since" }).waitFor({ timeout: 6000 });
  await page.unroute("**/v1/**");
  await page.locator("#unreachable").waitFor({ state: "hidden", timeout: 6000 });
});

// 13. The audit page forgets a former run's checks; a malformed key is
//     reported as such, and no verdict with a bad key starts "Verified".
await scenario("audit-and-keys", page, async () => {
  const saved = await get("/v1/log/checkpoint?tree_size=10", true);
  await go("#/audit");
  await page.locator("main h1", { hasText: "Audit" }).waitFor();
  await page.fill("#saved-checkpoint", saved);
  await page.click("#growth-check");
  await page.locator("#growth-status", { hasText: "The log only grew" }).waitFor();
  check((await page.locator("#growth-checks tbody tr").count()) > 0, "checks shown");
  await page.fill("#saved-checkpoint", "not a checkpoint at all");
  await page.click("#growth-check");
  await page.locator("#growth-status", { hasText: "not a checkpoint" }).waitFor();
  check((await page.locator("#growth-checks tbody tr").count()) === 0, "the former run's checks are still shown");
  // The event page, with a malformed key, then a well-formed wrong one.
  await go("#/events/recent");
  await page.locator("#proof-status", { hasText: "signature checked" }).waitFor();
  await page.fill("#verifier-key", "garbage");
  await page.press("#verifier-key", "Enter");
  await page.locator("#proof-status", { hasText: "malformed" }).waitFor();
  let verdict = await page.locator("#proof-status").textContent();
  check(!verdict.startsWith("Verified") && verdict.startsWith("NOT verified"), "malformed key: " + verdict);
  const key = (await get("/v1/log/public-key", true)).trim();
  const [n, id] = key.split("+");
  await page.fill("#verifier-key", `${n}+${id}+${Buffer.from([1, ...new Array(32).fill(9)]).toString("base64")}`);
  await page.press("#verifier-key", "Enter");
  await page.locator("#proof-status", { hasText: "did NOT check" }).waitFor();
  verdict = await page.locator("#proof-status").textContent();
  check(!verdict.startsWith("Verified"), "wrong key: " + verdict);
});

// 14. Sign-out leaves nothing of the last page in the document; every
//     authenticated request asks for cache mode no-store (the page's fetch
//     is watched from before the console's scripts run).
await scenario("sign-out-clears", page, async () => {
  await page.addInitScript(() => {
    const orig = window.fetch;
    window.__fetches = [];
    window.fetch = (input, init) => {
      window.__fetches.push([String(input), init && init.cache, !!(init && init.headers)]);
      return orig(input, init);
    };
  });
  await go("#/attempts/" + encodeURIComponent(LONG_ATTEMPT));
  await page.reload();
  await page.locator("main h1", { hasText: "Attempt" }).waitFor();
  await page.locator("main table").first().waitFor();
  await go("#/feed");
  await page.locator("#feed-status", { hasText: "live" }).waitFor();
  await go("#/events/recent");
  await page.locator("#proof-status", { hasText: "Verified" }).waitFor();
  const seen = (await page.evaluate(() => window.__fetches)).filter(([u]) => u.startsWith("/v1/"));
  await go("#/attempts/" + encodeURIComponent(LONG_ATTEMPT));
  await page.locator("main table").first().waitFor();
  await page.click("#signout");
  await page.locator("#signin-message", { hasText: "Signed out" }).waitFor();
  const left = await page.evaluate(() => ({ kids: document.getElementById("main").childElementCount, text: document.getElementById("main").textContent, title: document.title }));
  check(left.kids === 0 && left.text === "", "main still holds: " + left.text.slice(0, 80));
  check(!left.title.includes("long-attempt"), "the title names the attempt: " + left.title);
  check(seen.length > 0, "no v1 request seen");
  check(seen.some(([u]) => u.startsWith("/v1/events/stream")), "the stream's request was seen");
  for (const [url, cache] of seen) check(cache === "no-store", `${url.slice(0, 60)}: cache ${cache}`);
});

await finish();
