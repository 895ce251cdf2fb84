// The console's only way to the server: the authenticated v1 API.
// The token lives in sessionStorage only (gone when the tab closes).

const KEY = "leviathan.token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  sessionStorage.setItem(KEY, t);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

/** An answer that was not 2xx: status, the API's error code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Called with the error when the server refuses the token (401). */
let onUnauthorized = () => {};
export function whenUnauthorized(f) {
  onUnauthorized = f;
}

/**
 * Called with (true) when an answer arrived, (false, error) when the server
 * could not be reached at all (no answer: down, or the network).
 */
let onReach = () => {};
export function whenReachable(f) {
  onReach = f;
}

// Every authenticated request: nothing the API answers is stored by the
// browser (no disk cache of bodies read with the token).
const NO_STORE = "no-store";

async function refusal(resp) {
  let code = "http_" + resp.status;
  let message = resp.statusText || "request failed";
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch (_) {
    // not JSON: keep the status text
  }
  return new ApiError(resp.status, code, message);
}

function headers(extra, tok) {
  const h = new Headers(extra || {});
  h.set("Authorization", "Bearer " + (tok ?? token() ?? ""));
  return h;
}

/** GET/POST a JSON route under /v1. Throws ApiError. */
export async function api(path, opts = {}) {
  return (await request(path, opts)).json();
}

/** GET a text route under /v1 (the checkpoint, the verifier key). Throws ApiError. */
export async function apiText(path, opts = {}) {
  return (await request(path, opts)).text();
}

async function request(path, { method = "GET", body, tok, signal } = {}) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}, tok), signal, cache: NO_STORE };
  if (body !== undefined) init.body = JSON.stringify(body);
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    const err = new ApiError(0, "unreachable", "the server cannot be reached: " + e.message);
    onReach(false, err);
    throw err;
  }
  onReach(true);
  if (!resp.ok) {
    const err = await refusal(resp);
    if (resp.status === 401 && tok === undefined) onUnauthorized(err);
    throw err;
  }
  return resp;
}

/** Like api(), but a 404 (a route this server does not have yet) gives null. */
export async function optional(path, opts) {
  try {
    return await api(path, opts);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 405)) {
      return null;
    }
    throw e;
  }
}

/** Path segment, percent-encoded. */
export const seg = encodeURIComponent;

/** Downloads an artifact through the API (the token cannot go in a link). */
export async function download(sha256, name) {
  const resp = await fetch("/v1/artifacts/" + seg(sha256), { headers: headers(), cache: NO_STORE });
  if (!resp.ok) throw await refusal(resp);
  const blob = await resp.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name || sha256;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/**
 * Follows GET /v1/events/stream (Server-Sent Events) with fetch, since
 * EventSource cannot send the Authorization header. Reconnects after the last
 * seq received when the server ends the stream, so nothing is lost or doubled;
 * a 503 (too many streams) or an unreachable server is retried with a growing
 * delay, its reason shown; any other refusal (4xx: a bad filter…) ends it with
 * the server's message; a 401 hands over to the sign-in (whenUnauthorized).
 * Returns a function that stops it.
 *   opts: {after, type, target, onState(text, kind), batch(events)}
 *   kind: "live", "retry" (reconnecting), "refused" (stopped for good)
 */
export function follow(opts) {
  const ctl = new AbortController();
  let after = opts.after;
  let stopped = false;
  const state = (s, kind = "live") => opts.onState && opts.onState(s, kind);

  async function once() {
    const q = new URLSearchParams();
    if (after !== undefined && after !== null) q.set("after_seq", String(after));
    if (opts.type) q.set("type", opts.type);
    if (opts.target) q.set("target", opts.target);
    let resp;
    try {
      resp = await fetch("/v1/events/stream?" + q, {
        headers: headers({ Accept: "text/event-stream" }),
        signal: ctl.signal,
        cache: NO_STORE,
      });
    } catch (e) {
      if (e.name !== "AbortError") onReach(false, new ApiError(0, "unreachable", "the server cannot be reached: " + e.message));
      throw e;
    }
    onReach(true);
    if (!resp.ok) {
      const err = await refusal(resp);
      if (resp.status === 401) onUnauthorized(err);
      throw err;
    }
    state("live");
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    let msg = { data: [], event: null, id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      let nl;
      const got = [];
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, "");
        buf = buf.slice(nl + 1);
        if (line === "") {
          if (msg.event === "lagged") {
            state("catching up");
          } else if (msg.data.length && (msg.event === null || msg.event === "message")) {
            const ev = JSON.parse(msg.data.join("\n"));
            after = ev.seq;
            got.push(ev);
          }
          msg = { data: [], event: null, id: null };
          continue;
        }
        if (line.startsWith(":")) {
          const m = /stream open after_seq=(\d+)/.exec(line);
          if (m && (after === undefined || after === null)) after = Number(m[1]);
          continue;
        }
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        let v = i < 0 ? "" : line.slice(i + 1);
        if (v.startsWith(" ")) v = v.slice(1);
        if (field === "data") msg.data.push(v);
        else if (field === "event") msg.event = v;
        else if (field === "id") msg.id = v;
      }
      if (got.length) opts.batch(got);
    }
  }

  (async () => {
    let delay = 500;
    while (!stopped) {
      try {
        await once();
        // The server ended the stream (a restart, a lagged client): again,
        // after the last seq received.
        delay = 500;
        if (stopped) return;
        state("reconnecting", "retry");
      } catch (e) {
        if (stopped || e.name === "AbortError") return;
        if (e instanceof ApiError && e.status === 401) {
          state("signed out: " + e.message, "refused");
          return;
        }
        const busy = e instanceof ApiError && (e.status === 503 || e.status === 429 || e.status === 408 || e.status >= 500);
        if (e instanceof ApiError && e.status > 0 && !busy) {
          // Refused for good (a bad filter, a missing role): trying again
          // would be refused again.
          state(`refused by the server: ${e.message} (${e.status} ${e.code})`, "refused");
          return;
        }
        delay = Math.min(delay * 2, 10000);
        const why = e instanceof ApiError && e.status > 0 ? `${e.message} (${e.status} ${e.code})` : "the server cannot be reached";
        state(`reconnecting in ${Math.round(delay / 100) / 10} s: ${why}`, "retry");
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  })();

  return () => {
    stopped = true;
    ctl.abort();
  };
}
