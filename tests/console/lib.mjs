// Shared by the console's browser scripts (run.mjs, deep.mjs): one headless
// Chromium (Debian's /usr/bin/chromium through playwright-core), pages that
// record CSP violations and script errors, scenarios that print `ok NAME ms`
// or `FAIL NAME: why` and always save a screenshot, and a WCAG contrast check.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

export const BASE = process.env.BASE_URL;
export const TOKEN = process.env.TOKEN;
export const OUT = process.env.OUT_DIR;
mkdirSync(OUT, { recursive: true });

export const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

let failed = 0;
const problems = []; // CSP violations and page errors, any page

export async function newPage(viewport = { width: 1280, height: 900 }) {
  const ctx = await browser.newContext({ viewport });
  const page = await ctx.newPage();
  page.setDefaultTimeout(10000);
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/i.test(m.text())) problems.push("console: " + m.text());
  });
  return page;
}

export async function scenario(name, page, f) {
  const t = Date.now();
  try {
    await f();
    console.log(`ok ${name} ${Date.now() - t}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${String(e && e.stack ? e.stack : e).split("\n").slice(0, 4).join(" | ")}`);
  } finally {
    try {
      await page.screenshot({ path: join(OUT, name + ".png"), fullPage: true });
    } catch (e) {
      console.log(`(no screenshot for ${name}: ${e.message})`);
    }
  }
}

export function check(cond, what) {
  if (!cond) throw new Error(what);
}

export async function signIn(page, token) {
  await page.goto(BASE + "/console");
  await page.fill("#token", token);
  await page.click("#signin-form button[type=submit]");
}

/** GET a v1 route with the token, from the test (not the page): JSON or text. */
export async function get(path, text = false) {
  const r = await fetch(BASE + path, { headers: { Authorization: "Bearer " + TOKEN } });
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return text ? r.text() : r.json();
}

/**
 * WCAG 2 contrast of every visible piece of text under `selector`: the text's
 * colour against the first opaque background behind it (walking up the tree).
 * Answers the failures, [{text, ratio, need}]: AA is 4.5:1, 3:1 for large text
 * (24 px, or 18.66 px bold).
 */
export async function contrastFailures(page, selector = "main") {
  return page.evaluate((sel) => {
    const parse = (c) => {
      const m = /rgba?\(([^)]+)\)/.exec(c);
      if (!m) return null;
      const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
      return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
    };
    const lum = ({ r, g, b }) => {
      const f = (v) => {
        v /= 255;
        return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = parse(getComputedStyle(e).backgroundColor);
        if (c && c.a >= 0.99) return c;
      }
      return { r: 255, g: 255, b: 255, a: 1 };
    };
    const out = [];
    const seen = new Set();
    const root = document.querySelector(sel);
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!n.textContent.trim() || !el || seen.has(el)) continue;
      seen.add(el);
      if (el.closest("svg")) continue; // graph labels: checked as graphics, not text
      const r = el.getBoundingClientRect();
      const s = getComputedStyle(el);
      if (!r.width || !r.height || s.visibility === "hidden" || s.display === "none") continue;
      const fg = parse(s.color);
      const bg = background(el);
      const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
      const ratio = (a + 0.05) / (b + 0.05);
      const size = parseFloat(s.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(s.fontWeight) >= 700);
      const need = large ? 3 : 4.5;
      if (ratio < need) out.push({ text: n.textContent.trim().slice(0, 40), ratio: Math.round(ratio * 100) / 100, need });
    }
    return out;
  }, selector);
}

/** Ends the run: the CSP/page-error verdict, then exit 1 if anything failed. */
export async function finish() {
  if (problems.length) {
    failed++;
    console.log("FAIL page-problems: " + problems.join(" | "));
  } else {
    console.log("ok no-csp-violations-or-page-errors 0");
  }
  await browser.close();
  process.exit(failed ? 1 : 0);
}
