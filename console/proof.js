// Checks an event's inclusion in the log in the browser, without trusting the
// page's server for the arithmetic: SHA-256 through WebCrypto
// (crypto.subtle.digest), the RFC 9162 §2.1.3.2 inclusion-proof check, the
// C2SP tlog-checkpoint parsed, and its Ed25519 signature checked with the
// verifier key where the browser's WebCrypto has Ed25519.
//
// What is hashed (docs/AUDIT.md): the record is the stored RFC 8785 JSON of
// the event, byte for byte; its SHA-256 is the event's hash; the leaf hash is
// SHA-256(0x00 ‖ record), an interior node SHA-256(0x01 ‖ left ‖ right).

const enc = new TextEncoder();

/** Whether this page may use WebCrypto (a secure context: https or loopback). */
export function cryptoAvailable() {
  return !!(globalThis.crypto && crypto.subtle && typeof crypto.subtle.digest === "function");
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(s) {
  if (typeof s !== "string" || s.length % 2 || /[^0-9a-f]/i.test(s)) throw new Error("not hex: " + String(s).slice(0, 20));
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function fromBase64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** RFC 9162 §2.1.1: SHA-256(0x00 ‖ entry). */
export async function leafHash(entry) {
  return sha256(concat(Uint8Array.of(0), entry));
}

/** RFC 9162 §2.1.1: SHA-256(0x01 ‖ left ‖ right). */
export async function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

/**
 * RFC 9162 §2.1.3.2: the root an inclusion proof leads to, or null when the
 * proof cannot be a proof for (leafIndex, treeSize) (wrong length, index out
 * of range). `leaf` and each `path` element are 32-byte arrays.
 */
export async function rootFromInclusionProof(leafIndex, treeSize, leaf, path) {
  if (!Number.isSafeInteger(leafIndex) || !Number.isSafeInteger(treeSize) || leafIndex < 0 || leafIndex >= treeSize) return null;
  // fn and sn as BigInt-free integers: tree sizes stay far below 2^53.
  let fn = leafIndex;
  let sn = treeSize - 1;
  let r = leaf;
  for (const p of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

/**
 * A C2SP signed note holding a tlog-checkpoint: {origin, size, root (hex),
 * extensions: {name: value}, body (the signed text), signatures: [{name,
 * keyId (hex), signature (bytes)}]}. Throws on a malformed note.
 */
export function parseCheckpoint(text) {
  const split = text.indexOf("\n\n");
  if (split < 0) throw new Error("not a signed note (no blank line before the signatures)");
  const body = text.slice(0, split + 1);
  const lines = body.split("\n").slice(0, -1);
  if (lines.length < 3) throw new Error("a checkpoint has an origin, a size and a root");
  const [origin, sizeText, rootB64, ...rest] = lines;
  if (!/^[0-9]+$/.test(sizeText)) throw new Error("the tree size is not a number: " + sizeText);
  const root = fromBase64(rootB64);
  if (root.length !== 32) throw new Error("the root is not 32 bytes");
  const extensions = {};
  for (const l of rest) {
    const i = l.indexOf(" ");
    if (i > 0) extensions[l.slice(0, i)] = l.slice(i + 1);
  }
  const signatures = [];
  for (const l of text.slice(split + 2).split("\n")) {
    if (!l) continue;
    const m = /^\u2014 (\S+) (\S+)$/.exec(l);
    if (!m) throw new Error("a malformed signature line");
    const blob = fromBase64(m[2]);
    if (blob.length < 5) throw new Error("a signature too short");
    signatures.push({ name: m[1], keyId: toHex(blob.slice(0, 4)), signature: blob.slice(4) });
  }
  return { origin, size: Number(sizeText), root: toHex(root), extensions, body, signatures };
}

/** A verifier key `name+keyid+base64(0x01 ‖ key)`: {name, keyId, publicKey}. */
export function parseVerifierKey(text) {
  const t = text.trim();
  const parts = t.split("+");
  if (parts.length < 3) throw new Error("a verifier key is name+keyid+key");
  const key = fromBase64(parts.slice(2).join("+"));
  if (key.length !== 33 || key[0] !== 1) throw new Error("not an Ed25519 verifier key");
  return { name: parts[0], keyId: parts[1].toLowerCase(), publicKey: key.slice(1) };
}

/**
 * Checks the note's signature by `verifierKey` (text). Answers true or false,
 * or null when this browser's WebCrypto has no Ed25519.
 */
export async function verifyNoteSignature(cp, verifierKey) {
  const k = parseVerifierKey(verifierKey);
  const sig = cp.signatures.find((s) => s.name === k.name && s.keyId === k.keyId);
  if (!sig) return false;
  // The key id: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4].
  const id = toHex((await sha256(concat(enc.encode(k.name + "\n"), Uint8Array.of(1), k.publicKey))).slice(0, 4));
  if (id !== k.keyId) return false;
  let key;
  try {
    key = await crypto.subtle.importKey("raw", k.publicKey, { name: "Ed25519" }, false, ["verify"]);
  } catch (_) {
    return null;
  }
  return crypto.subtle.verify({ name: "Ed25519" }, key, sig.signature, enc.encode(cp.body));
}

/**
 * Every check of an audit bundle (GET /v1/events/{id}/bundle) for the event
 * `event` (as GET /v1/events/{id} serves it), with `verifierKey` (or null).
 * Answers {ok, included, signed, checkpoint, root (hex, computed), checks:
 * [{check, ok, detail}]}: `included` when every check but the signature
 * passed (the record is the leaf the proof leads from to the checkpoint's
 * root), `signed` true/false for the signature (null without a key), `ok` when
 * every check passed (a signature this browser cannot check is not passed).
 */
export async function verifyBundle(bundle, event, verifierKey) {
  const checks = [];
  const add = (check, ok, detail) => checks.push({ check, ok, detail });
  const record = enc.encode(bundle.record);
  const proof = bundle.proof;

  const hash = toHex(await sha256(record));
  add("record hash", hash === event.hash && hash === bundle.hash, `SHA-256(record) = ${hash}`);
  let rec = null;
  try {
    rec = JSON.parse(bundle.record);
  } catch (_) {
    // reported below
  }
  add("record is this event", !!rec && rec.seq === event.seq && rec.event_id === event.event_id && proof.leaf_index === event.seq - 1,
    rec ? `seq ${rec.seq}, event ${rec.event_id}, leaf index ${proof.leaf_index}` : "the record is not JSON");
  const leaf = await leafHash(record);
  add("leaf hash", toHex(leaf) === proof.leaf_hash, `SHA-256(0x00 ‖ record) = ${toHex(leaf)}`);

  let cp = null;
  try {
    cp = parseCheckpoint(bundle.checkpoint);
  } catch (e) {
    add("checkpoint", false, e.message);
  }
  let root = null;
  try {
    root = await rootFromInclusionProof(proof.leaf_index, proof.tree_size, leaf, proof.path.map(fromHex));
  } catch (e) {
    add("inclusion proof", false, e.message);
  }
  if (cp) {
    add("proof size is the checkpoint's", proof.tree_size === cp.size, `proof tree size ${proof.tree_size}, checkpoint ${cp.size}`);
    const computed = root ? toHex(root) : null;
    add("inclusion proof (RFC 9162 §2.1.3.2)", computed !== null && computed === cp.root,
      computed === null ? "the path does not fit the leaf index and tree size" : `computed root ${computed}; checkpoint root ${cp.root}`);
    if (verifierKey) {
      try {
        const sig = await verifyNoteSignature(cp, verifierKey);
        if (sig === null) add("checkpoint signature", false, "this browser cannot check Ed25519 signatures (check the bundle with leviathan audit verify-bundle)");
        else add("checkpoint signature", sig, sig ? `Ed25519 signature of ${cp.origin} verified with key id ${verifierKey.trim().split("+")[1]}` : "no valid signature by this key");
      } catch (e) {
        add("checkpoint signature", false, e.message);
      }
    }
  }
  const sig = checks.find((c) => c.check === "checkpoint signature");
  return {
    ok: checks.every((c) => c.ok),
    included: checks.filter((c) => c !== sig).every((c) => c.ok) && !!cp,
    signed: sig ? sig.ok : null,
    checkpoint: cp,
    root: root ? toHex(root) : null,
    checks,
  };
}

/**
 * RFC 9162 §2.1.4.2: whether `path` proves that the tree of `first` leaves
 * with root `firstRoot` is a prefix of the tree of `second` leaves with root
 * `secondRoot` (32-byte arrays).
 */
export async function verifyConsistency(first, second, firstRoot, secondRoot, path) {
  const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  if (!Number.isSafeInteger(first) || !Number.isSafeInteger(second) || first < 0 || first > second) return false;
  if (first === second) return path.length === 0 && same(firstRoot, secondRoot);
  if (first === 0) return path.length === 0; // the empty tree is a prefix of every tree
  if (path.length === 0) return false;
  const p = (first & (first - 1)) === 0 ? [firstRoot, ...path] : [...path];
  let fn = first - 1;
  let sn = second - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = p[0];
  let sr = p[0];
  for (const c of p.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && same(fr, firstRoot) && same(sr, secondRoot);
}

/**
 * Whether the log only grew from the checkpoint `oldText` (one an auditor
 * saved) to `newText` (the latest): both parsed and, with `verifierKey`,
 * their signatures checked; the consistency proof `proof` (GET
 * /v1/log/consistency?from=M&to=N) checked against their roots.
 * Answers {ok, old, new, checks: [{check, ok, detail}]}.
 */
export async function verifyGrowth(oldText, newText, proof, verifierKey) {
  const checks = [];
  const add = (check, ok, detail) => checks.push({ check, ok, detail });
  let o = null;
  let n = null;
  try {
    o = parseCheckpoint(oldText);
  } catch (e) {
    add("saved checkpoint", false, e.message);
  }
  try {
    n = parseCheckpoint(newText);
  } catch (e) {
    add("latest checkpoint", false, e.message);
  }
  if (o && n) {
    if (verifierKey) {
      for (const [label, cp] of [["saved checkpoint's signature", o], ["latest checkpoint's signature", n]]) {
        try {
          const sig = await verifyNoteSignature(cp, verifierKey);
          add(label, sig === true, sig === null ? "this browser cannot check Ed25519 signatures" : sig ? `signed by ${cp.origin}` : "no valid signature by this key");
        } catch (e) {
          add(label, false, e.message);
        }
      }
    }
    add("same log", o.origin === n.origin, `origins ${o.origin} and ${n.origin}`);
    add("proof is for these sizes", proof.from === o.size && proof.to === n.size, `proof from ${proof.from} to ${proof.to}; checkpoints of ${o.size} and ${n.size}`);
    let ok = false;
    try {
      ok = o.size <= n.size && (await verifyConsistency(o.size, n.size, fromHex(o.root), fromHex(n.root), proof.path.map(fromHex)));
    } catch (e) {
      add("consistency proof", false, e.message);
    }
    add("consistency proof (RFC 9162 §2.1.4.2)", ok, ok
      ? `the tree of ${o.size} leaves (root ${o.root}) is a prefix of the tree of ${n.size} (root ${n.root})`
      : `the path does not lead from root ${o.root} (size ${o.size}) to root ${n.root} (size ${n.size})`);
  }
  return { ok: checks.length > 0 && checks.every((c) => c.ok), old: o, new: n, checks };
}
