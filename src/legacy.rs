//! Import of the original (Python) control plane's NDJSON journal
//! (`leviathan import --legacy events.ndjson`). It owns the original's hash
//! rules, re-implemented exactly: SHA-256 over Python's
//! `json.dumps(obj, sort_keys=True, separators=(",", ":"))` (so
//! `ensure_ascii`: every character outside U+0020..U+007E escaped as
//! `\uXXXX`, lowercase, astral characters as surrogate pairs; floats as
//! Python's `repr`: `1.0`, `1e-05`, `1e+16`; integers at any size) of
//! `{actor_id, event_id, event_type, payload, prev_hash, timestamp}`, with the
//! timestamp as Python's `isoformat()` of the parsed time (`Z` → `+00:00`,
//! the fraction as 6 digits or none, a naive time without offset).
//!
//! Each line's hash and link are checked; a line whose hash does not
//! recompute is reported with why (which other serialization reproduces it,
//! or which Python-specific forms in it could not be recovered). The events
//! are appended to a new log, each record carrying its legacy hash and the
//! exact text that hash covers in a `legacy` member (docs/HASHING.md).

use crate::digest::Sha256;
use crate::ids::{EventId, Target, Timestamp};
use crate::jcs::CanonicalJson;
use crate::log::record::EventDraft;
use anyhow::{bail, Context};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

// ------------------------------------------------------------ Python's JSON

/// A JSON value as Python's `json.loads` makes it: integers of any size
/// (kept as their digits), floats (with the text they were read from),
/// strings as code points (a lone surrogate is a code point of its own),
/// objects with their keys in order, duplicates included (the last wins).
#[derive(Debug, Clone, PartialEq)]
pub enum Py {
    Null,
    Bool(bool),
    Int(String),
    Float(f64, String),
    Str(Vec<u32>),
    List(Vec<Py>),
    Dict(Vec<(Vec<u32>, Py)>),
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.b[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Py, String> {
        if depth > 512 {
            return self.err("nested too deeply");
        }
        self.ws();
        let Some(&c) = self.b.get(self.i) else {
            return self.err("unexpected end");
        };
        match c {
            b'{' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat("}") {
                    return Ok(Py::Dict(items));
                }
                loop {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return self.err("expected a key");
                    }
                    let k = self.string()?;
                    self.ws();
                    if !self.eat(":") {
                        return self.err("expected ':'");
                    }
                    let v = self.value(depth + 1)?;
                    items.push((k, v));
                    self.ws();
                    if self.eat(",") {
                        continue;
                    }
                    if self.eat("}") {
                        return Ok(Py::Dict(items));
                    }
                    return self.err("expected ',' or '}'");
                }
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat("]") {
                    return Ok(Py::List(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(",") {
                        continue;
                    }
                    if self.eat("]") {
                        return Ok(Py::List(items));
                    }
                    return self.err("expected ',' or ']'");
                }
            }
            b'"' => Ok(Py::Str(self.string()?)),
            _ if self.eat("null") => Ok(Py::Null),
            _ if self.eat("true") => Ok(Py::Bool(true)),
            _ if self.eat("false") => Ok(Py::Bool(false)),
            _ if self.eat("NaN") => Ok(Py::Float(f64::NAN, "NaN".into())),
            _ if self.eat("Infinity") => Ok(Py::Float(f64::INFINITY, "Infinity".into())),
            _ if self.eat("-Infinity") => Ok(Py::Float(f64::NEG_INFINITY, "-Infinity".into())),
            _ => self.number(),
        }
    }

    fn number(&mut self) -> Result<Py, String> {
        let start = self.i;
        let digits = |p: &mut Parser<'_>| {
            let s = p.i;
            while p.i < p.b.len() && p.b[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i > s
        };
        self.eat("-");
        if self.eat("0") {
        } else if !digits(self) {
            return self.err("expected a value");
        }
        let mut float = false;
        if self.eat(".") {
            float = true;
            if !digits(self) {
                return self.err("expected digits after '.'");
            }
        }
        if self.b.get(self.i).is_some_and(|c| matches!(c, b'e' | b'E')) {
            float = true;
            self.i += 1;
            if !self.eat("+") {
                self.eat("-");
            }
            if !digits(self) {
                return self.err("expected exponent digits");
            }
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).expect("ASCII");
        if float {
            let f: f64 = text.parse().map_err(|_| format!("bad number {text}"))?;
            Ok(Py::Float(f, text.to_string()))
        } else {
            // Python's int: `-0` is 0.
            let t = if text == "-0" { "0" } else { text };
            Ok(Py::Int(t.to_string()))
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        match h {
            Some(v) => {
                self.i += 4;
                Ok(v)
            }
            None => self.err("bad \\u escape"),
        }
    }

    fn string(&mut self) -> Result<Vec<u32>, String> {
        self.i += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.b.get(self.i) else {
                return self.err("unterminated string");
            };
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.i += 1;
                    let Some(&e) = self.b.get(self.i) else {
                        return self.err("unterminated escape");
                    };
                    self.i += 1;
                    out.push(match e {
                        b'"' => 0x22,
                        b'\\' => 0x5c,
                        b'/' => 0x2f,
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => 0x0a,
                        b'r' => 0x0d,
                        b't' => 0x09,
                        b'u' => {
                            let u = self.hex4()?;
                            // A surrogate pair is one character, as Python reads it.
                            if (0xd800..0xdc00).contains(&u) && self.b[self.i..].starts_with(b"\\u")
                            {
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xdc00..0xe000).contains(&lo) {
                                    0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00)
                                } else {
                                    self.i = save;
                                    u
                                }
                            } else {
                                u
                            }
                        }
                        _ => return self.err("bad escape"),
                    });
                }
                c if c < 0x20 => return self.err("control character in a string"),
                _ => {
                    // One UTF-8 character.
                    let rest = &self.b[self.i..];
                    let len = match c {
                        0x00..=0x7f => 1,
                        0xc0..=0xdf => 2,
                        0xe0..=0xef => 3,
                        _ => 4,
                    };
                    let ch = rest
                        .get(..len)
                        .and_then(|s| std::str::from_utf8(s).ok())
                        .and_then(|s| s.chars().next());
                    let Some(ch) = ch else {
                        return self.err("invalid UTF-8");
                    };
                    out.push(ch as u32);
                    self.i += len;
                }
            }
        }
    }
}

/// Parses one JSON document as Python's `json.loads` would.
pub fn py_loads(text: &str) -> Result<Py, String> {
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.b.len() {
        return p.err("extra data");
    }
    Ok(v)
}

/// How a canonical text is written: the original's rules, or one of the
/// forms other writers produce (used to say why a hash does not recompute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Form {
    /// Non-ASCII as `\uXXXX` (Python's default `ensure_ascii=True`).
    pub ensure_ascii: bool,
    /// Floats as Python's `repr` (else as ECMAScript writes numbers).
    pub python_floats: bool,
    /// The timestamp as Python's `isoformat()` (else the journal's text).
    pub isoformat: bool,
}

impl Form {
    pub const ORIGINAL: Form = Form {
        ensure_ascii: true,
        python_floats: true,
        isoformat: true,
    };

    /// Every form, the original's first.
    fn all() -> Vec<Form> {
        let mut out = Vec::new();
        for isoformat in [true, false] {
            for python_floats in [true, false] {
                for ensure_ascii in [true, false] {
                    out.push(Form {
                        ensure_ascii,
                        python_floats,
                        isoformat,
                    });
                }
            }
        }
        out.sort_by_key(|f| {
            u8::from(!f.ensure_ascii) + u8::from(!f.python_floats) + u8::from(!f.isoformat)
        });
        out
    }

    /// What differs from the original's rules, in words.
    fn describe(&self) -> String {
        let mut d = Vec::new();
        if !self.ensure_ascii {
            d.push(
                "non-ASCII characters as raw UTF-8 instead of \\uXXXX escapes (ensure_ascii=False)",
            );
        }
        if !self.python_floats {
            d.push(
                "floats in ECMAScript form (1e-5, 1 for 1.0) instead of Python's repr (1e-05, 1.0)",
            );
        }
        if !self.isoformat {
            d.push("the timestamp as the journal writes it instead of Python's isoformat()");
        }
        d.join("; ")
    }
}

/// Python's `repr` of a float (what `json.dumps` writes): the shortest
/// digits that round-trip, fixed notation with at least one decimal for
/// decimal exponents from -4 to 15, else `d.ddde±XX`; `NaN`, `Infinity`.
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0.0");
    }
    let sci = format!("{:e}", f.abs());
    let (mant, exp) = sci.split_once('e').expect("LowerExp has an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let decpt = exp + 1;
    let body = if decpt <= -4 || decpt > 16 {
        let m = if digits.len() == 1 {
            digits
        } else {
            format!("{}.{}", &digits[..1], &digits[1..])
        };
        format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else if decpt <= 0 {
        format!("0.{}{digits}", "0".repeat((-decpt) as usize))
    } else if decpt as usize >= digits.len() {
        format!("{digits}{}.0", "0".repeat(decpt as usize - digits.len()))
    } else {
        let d = decpt as usize;
        format!("{}.{}", &digits[..d], &digits[d..])
    };
    format!("{sign}{body}")
}

fn write_str(s: &[u32], ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for &cp in s {
        match cp {
            0x22 => out.push_str("\\\""),
            0x5c => out.push_str("\\\\"),
            0x0a => out.push_str("\\n"),
            0x0d => out.push_str("\\r"),
            0x09 => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            0x20..=0x7e => out.push(char::from_u32(cp).expect("ASCII")),
            _ if !ensure_ascii && cp >= 0x20 && char::from_u32(cp).is_some() => {
                out.push(char::from_u32(cp).expect("checked"))
            }
            _ if cp > 0xffff => {
                let v = cp - 0x10000;
                out.push_str(&format!(
                    "\\u{:04x}\\u{:04x}",
                    0xd800 + (v >> 10),
                    0xdc00 + (v & 0x3ff)
                ));
            }
            _ => out.push_str(&format!("\\u{cp:04x}")),
        }
    }
    out.push('"');
}

/// `json.dumps(v, sort_keys=True, separators=(",", ":"))` in `form`.
pub fn py_dumps(v: &Py, form: Form, out: &mut String) {
    match v {
        Py::Null => out.push_str("null"),
        Py::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Py::Int(t) => out.push_str(t),
        Py::Float(f, _) => {
            if form.python_floats || !f.is_finite() {
                out.push_str(&py_float_repr(*f))
            } else {
                out.push_str(ryu_js::Buffer::new().format_finite(*f))
            }
        }
        Py::Str(s) => write_str(s, form.ensure_ascii, out),
        Py::List(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                py_dumps(x, form, out);
            }
            out.push(']');
        }
        Py::Dict(items) => {
            // The last of duplicate keys wins; sorted by code point.
            let sorted: BTreeMap<&[u32], &Py> =
                items.iter().map(|(k, v)| (k.as_slice(), v)).collect();
            out.push('{');
            for (i, (k, x)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(k, form.ensure_ascii, out);
                out.push(':');
                py_dumps(x, form, out);
            }
            out.push('}');
        }
    }
}

fn py_str(s: &str) -> Py {
    Py::Str(s.chars().map(|c| c as u32).collect())
}

fn to_string(s: &[u32]) -> Option<String> {
    s.iter().map(|&c| char::from_u32(c)).collect()
}

/// Python's `isoformat()` of the datetime the journal's timestamp text
/// parses to: `T`, seconds always, the fraction as 6 digits unless zero,
/// a UTC offset as `+00:00`, a naive time without one.
pub fn py_isoformat(ts: &str) -> Option<String> {
    let ts = ts.trim();
    if ts.len() < 10 || !ts.is_char_boundary(10) {
        return None;
    }
    let (date, rest) = ts.split_at(10);
    if rest.is_empty() {
        return Some(format!("{date}T00:00:00"));
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (time, tz) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, Some("+00:00".to_string()))
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let tz = &rest[i..];
        let tz = if tz.len() == 5 && !tz.contains(':') {
            format!("{}:{}", &tz[..3], &tz[3..])
        } else {
            tz.to_string()
        };
        (&rest[..i], Some(tz))
    } else {
        (rest, None)
    };
    let (hms, frac) = match time.split_once(['.', ',']) {
        Some((h, f)) => (h, f),
        None => (time, ""),
    };
    let hms = match hms.len() {
        5 => format!("{hms}:00"),
        8 => hms.to_string(),
        _ => return None,
    };
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut micros: String = frac.chars().take(6).collect();
    while micros.len() < 6 {
        micros.push('0');
    }
    let frac = if micros.chars().all(|c| c == '0') {
        String::new()
    } else {
        format!(".{micros}")
    };
    Some(format!(
        "{date}T{hms}{frac}{}",
        tz.map(|t| if t == "-00:00" { "+00:00".into() } else { t })
            .unwrap_or_default()
    ))
}

// ------------------------------------------------------------- the journal

/// One line of the journal, read.
struct Line {
    no: u64,
    event_id: String,
    event_type: String,
    timestamp: String,
    actor_id: Option<String>,
    payload: Py,
    payload_json: serde_json::Value,
    prev_hash: Option<String>,
    hash: String,
}

fn field<'a>(items: &'a [(Vec<u32>, Py)], name: &str) -> Option<&'a Py> {
    let key: Vec<u32> = name.chars().map(|c| c as u32).collect();
    items.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn read_line(no: u64, text: &str) -> Result<Line, String> {
    let Py::Dict(items) = py_loads(text).map_err(|e| format!("not JSON: {e}"))? else {
        return Err("not a JSON object".into());
    };
    let s = |name: &str| -> Result<String, String> {
        match field(&items, name) {
            Some(Py::Str(s)) => {
                to_string(s).ok_or_else(|| format!("{name} holds a lone surrogate"))
            }
            Some(_) => Err(format!("{name} is not a string")),
            None => Err(format!("{name} is missing")),
        }
    };
    let opt = |name: &str| -> Result<Option<String>, String> {
        match field(&items, name) {
            None | Some(Py::Null) => Ok(None),
            Some(_) => s(name).map(Some),
        }
    };
    let payload = match field(&items, "payload") {
        Some(p @ Py::Dict(_)) => p.clone(),
        Some(_) => return Err("payload is not an object".into()),
        None => return Err("payload is missing".into()),
    };
    // Our record's payload, parsed as any ingest is (refuses NaN, Infinity
    // and lone surrogates, which a stored payload cannot hold).
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("cannot be stored as JSON here: {e}"))?;
    let payload_json = value.get("payload").cloned().unwrap_or_default();
    let hash = s("hash")?;
    if hash.len() != 64 || !hash.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("hash {hash:?} is not a lowercase hex SHA-256"));
    }
    Ok(Line {
        no,
        event_id: s("event_id")?,
        event_type: s("event_type")?,
        timestamp: s("timestamp")?,
        actor_id: opt("actor_id")?,
        payload,
        payload_json,
        prev_hash: opt("prev_hash")?,
        hash,
    })
}

/// The text the original hashed for `l`, in `form` (`None` if the
/// timestamp cannot be read as Python would).
fn hashed_text(l: &Line, form: Form) -> Option<String> {
    let ts = if form.isoformat {
        py_isoformat(&l.timestamp)?
    } else {
        l.timestamp.clone()
    };
    let obj = Py::Dict(vec![
        (
            "actor_id".chars().map(|c| c as u32).collect(),
            l.actor_id.as_deref().map_or(Py::Null, py_str),
        ),
        (
            "event_id".chars().map(|c| c as u32).collect(),
            py_str(&l.event_id),
        ),
        (
            "event_type".chars().map(|c| c as u32).collect(),
            py_str(&l.event_type),
        ),
        (
            "payload".chars().map(|c| c as u32).collect(),
            l.payload.clone(),
        ),
        (
            "prev_hash".chars().map(|c| c as u32).collect(),
            l.prev_hash.as_deref().map_or(Py::Null, py_str),
        ),
        ("timestamp".chars().map(|c| c as u32).collect(), py_str(&ts)),
    ]);
    let mut out = String::new();
    py_dumps(&obj, form, &mut out);
    Some(out)
}

/// Python-specific forms in a payload that a rewritten journal may have
/// lost: floats whose journal text is not Python's repr, integers (a float
/// like `1.0` read back as `1`), non-ASCII text.
fn hints(v: &Py, path: &str, out: &mut Vec<String>) {
    if out.len() >= 8 {
        return;
    }
    match v {
        Py::Float(f, text) => {
            let repr = py_float_repr(*f);
            if *text != repr {
                out.push(format!(
                    "{path} is written {text} in the journal; the original hashes the float as \
                     Python's repr {repr}"
                ));
            }
        }
        Py::Int(t) => out.push(format!(
            "{path} is the integer {t}: if the original hashed a float here (Python writes \
             {t}.0), the journal has lost the .0"
        )),
        Py::Str(s) if s.iter().any(|&c| c > 0x7e) => out.push(format!(
            "{path} holds non-ASCII text, which the original hashes as \\uXXXX escapes \
             (ensure_ascii)"
        )),
        Py::List(items) => {
            for (i, x) in items.iter().enumerate() {
                hints(x, &format!("{path}[{i}]"), out);
            }
        }
        Py::Dict(items) => {
            for (k, x) in items {
                let k = to_string(k).unwrap_or_else(|| "?".into());
                hints(x, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// One link the import could not verify, or verified only in another form.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub line: u64,
    pub event_id: String,
    /// `hash_mismatch`, `other_form`, `chain_broken` or `refused`.
    pub problem: &'static str,
    pub why: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

/// The summary `leviathan import --legacy` prints.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LegacySummary {
    pub journal: String,
    pub lines: u64,
    pub events: u64,
    /// Links whose hash recomputes (by the original's rules, or in another
    /// serialization: those are counted in `verified_in_other_form` too) and
    /// whose prev_hash is the previous line's hash.
    pub verified: u64,
    /// Hashes that recompute only in another serialization (`findings`).
    pub verified_in_other_form: u64,
    pub unverified: u64,
    pub chain_breaks: u64,
    /// Lines that cannot be stored (the import refuses them all).
    pub refused: u64,
    /// Later occurrences of an event_id, stored as `<id>@legacy-line-<n>`.
    pub renamed_duplicates: Vec<String>,
    pub findings: Vec<Finding>,
    pub legacy_head_hash: Option<String>,
    /// Whether the events were written (nothing is when a line is refused,
    /// or a link is unverified without --accept-unverified).
    pub imported: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_seq: Option<crate::seq::Seq>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_hash: Option<Sha256>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree_root: Option<Sha256>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_digest: Option<Sha256>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projection_errors: Option<u64>,
}

/// A line checked and turned into a draft.
struct Checked {
    draft: EventDraft,
}

/// Reads and checks the whole journal; the drafts to append, in order.
fn check_journal(
    path: &Path,
    default_target: &Target,
    s: &mut LegacySummary,
) -> anyhow::Result<Vec<Checked>> {
    use std::io::BufRead;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    let mut prev: Option<String> = None;
    let mut seen: HashMap<String, u64> = HashMap::new();
    for (i, text) in std::io::BufReader::new(file).lines().enumerate() {
        let no = i as u64 + 1;
        let text = text.with_context(|| format!("{} line {no}", path.display()))?;
        if text.trim().is_empty() {
            continue;
        }
        s.lines += 1;
        let l = match read_line(no, &text) {
            Ok(l) => l,
            Err(why) => {
                s.refused += 1;
                s.findings.push(Finding {
                    line: no,
                    event_id: String::new(),
                    problem: "refused",
                    why,
                    hints: vec![],
                });
                continue;
            }
        };
        // The link to the line before.
        let mut legacy = serde_json::Map::new();
        let mut verified = true;
        if l.prev_hash != prev {
            verified = false;
            s.chain_breaks += 1;
            let why = format!(
                "chain broken: prev_hash is {} but the previous line's hash is {}",
                l.prev_hash.as_deref().unwrap_or("null"),
                prev.as_deref().unwrap_or("null (genesis)")
            );
            legacy.insert("unverified".into(), why.clone().into());
            s.findings.push(Finding {
                line: no,
                event_id: l.event_id.clone(),
                problem: "chain_broken",
                why,
                hints: vec![],
            });
        }
        // The hash, by the original's rules, else in another form.
        let matched = Form::all().into_iter().find_map(|f| {
            let t = hashed_text(&l, f)?;
            (hex::encode(Sha256::of(t.as_bytes()).0) == l.hash).then_some((f, t))
        });
        let hashed = match matched {
            Some((f, t)) if f == Form::ORIGINAL => t,
            Some((f, t)) => {
                s.verified_in_other_form += 1;
                let why = format!(
                    "the hash recomputes only with {} (the original's code writes otherwise)",
                    f.describe()
                );
                legacy.insert("form".into(), f.describe().into());
                s.findings.push(Finding {
                    line: no,
                    event_id: l.event_id.clone(),
                    problem: "other_form",
                    why,
                    hints: vec![],
                });
                t
            }
            None => {
                verified = false;
                let mut h = Vec::new();
                if py_isoformat(&l.timestamp).is_none() {
                    h.push(format!(
                        "the timestamp {:?} is not a form Python's datetime writes",
                        l.timestamp
                    ));
                }
                hints(&l.payload, "payload", &mut h);
                let computed = hashed_text(&l, Form::ORIGINAL).unwrap_or_default();
                let why = format!(
                    "hash mismatch: the line says {}, its content hashes to {} by the original's \
                     rules, and no other known form reproduces it (the content differs from \
                     what was hashed)",
                    l.hash,
                    hex::encode(Sha256::of(computed.as_bytes()).0)
                );
                legacy.insert("unverified".into(), why.clone().into());
                s.findings.push(Finding {
                    line: no,
                    event_id: l.event_id.clone(),
                    problem: "hash_mismatch",
                    why,
                    hints: h,
                });
                computed
            }
        };
        if verified {
            s.verified += 1;
        } else {
            s.unverified += 1;
        }
        prev = Some(l.hash.clone());
        match to_draft(&l, hashed, legacy, default_target, &mut seen, s) {
            Ok(draft) => out.push(Checked { draft }),
            Err(why) => {
                s.refused += 1;
                s.findings.push(Finding {
                    line: no,
                    event_id: l.event_id.clone(),
                    problem: "refused",
                    why,
                    hints: vec![],
                });
            }
        }
    }
    s.legacy_head_hash = prev;
    Ok(out)
}

/// Our draft of a journal line: its fields checked as an ingest would, the
/// target from `payload.target_id` (else the default), and the `legacy`
/// member.
fn to_draft(
    l: &Line,
    hashed: String,
    mut legacy: serde_json::Map<String, serde_json::Value>,
    default_target: &Target,
    seen: &mut HashMap<String, u64>,
    s: &mut LegacySummary,
) -> Result<EventDraft, String> {
    crate::bundle::check_event_type(&l.event_type)?;
    let timestamp = Timestamp::normalize(&l.timestamp)?;
    let id = match seen.get(&l.event_id) {
        None => l.event_id.clone(),
        Some(first) => {
            let renamed = format!("{}@legacy-line-{}", l.event_id, l.no);
            s.renamed_duplicates.push(format!(
                "line {}: {:?} (first at line {first}) stored as {renamed:?}",
                l.no, l.event_id
            ));
            renamed
        }
    };
    let event_id = EventId::new(id).map_err(|e| e.0)?;
    seen.entry(l.event_id.clone()).or_insert(l.no);
    if let Some(a) = &l.actor_id {
        if a.len() > crate::ids::MAX_ID_BYTES || a.chars().any(char::is_control) {
            return Err("actor_id is too long or has control characters".into());
        }
    }
    let target = l
        .payload_json
        .get("target_id")
        .and_then(|t| t.as_str())
        .and_then(|t| Target::new(t).ok())
        .unwrap_or_else(|| default_target.clone());
    let attempt_id = l
        .payload_json
        .get("attempt_id")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    legacy.insert("hash".into(), l.hash.clone().into());
    legacy.insert("hashed".into(), hashed.into());
    legacy.insert("line".into(), l.no.into());
    legacy.insert(
        "prev_hash".into(),
        l.prev_hash
            .clone()
            .map_or(serde_json::Value::Null, Into::into),
    );
    Ok(EventDraft::new(
        event_id,
        l.event_type.clone(),
        timestamp,
        l.actor_id.clone(),
        attempt_id,
        &target,
        &CanonicalJson::of(&l.payload_json),
    )
    .with_legacy(&CanonicalJson::of(&serde_json::Value::Object(legacy))))
}

/// Checks the journal at `journal` and, when every line can be stored and
/// every link verifies (or `accept_unverified`), appends its events to a
/// new store in `data_dir`, builds the tree and rebuilds the graph.
pub fn import_legacy(
    journal: &Path,
    data_dir: &Path,
    default_target: &str,
    accept_unverified: bool,
    rebuild: Box<crate::import::Rebuild<'_>>,
) -> anyhow::Result<LegacySummary> {
    let target = Target::new(default_target).map_err(|e| anyhow::anyhow!("--target: {}", e.0))?;
    let mut s = LegacySummary {
        journal: journal.display().to_string(),
        ..LegacySummary::default()
    };
    // Refuse a used data dir before reading anything.
    if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
        bail!(
            "{} is not empty: an import goes into a new (or empty) data directory",
            data_dir.display()
        );
    }
    let checked = check_journal(journal, &target, &mut s)?;
    s.events = checked.len() as u64;
    if s.refused > 0 || (s.unverified > 0 && !accept_unverified) {
        return Ok(s);
    }
    // A failure (or a kill) leaves the data dir as found (or marked
    // unfinished), never a shorter log that verifies.
    let (head, root, rebuilt) = crate::files::fill_new_dir(data_dir, "import", || {
        let store = crate::storage::open_store_filling(data_dir)?;
        let mut loader = crate::import::Loader::new(&store)?;
        let bar = crate::progress::bar(s.events, "importing");
        for c in &checked {
            loader.append(&c.draft)?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        let (head, root) = loader.finish()?;
        // A new log of its own: its first start takes a new signing key,
        // whatever key file the data dir is given (tlog::signers).
        crate::tlog::signers::Signers::open(&store.db)?.mark_restored(
            &crate::tlog::signers::RestoredMark {
                tree_size: head.seq.0,
                signed_by: Vec::new(),
                restored_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                from: "import".into(),
            },
            None,
        )?;
        let rebuilt = rebuild(&store)?;
        crate::storage::flush_memtables(&store.db)?;
        Ok((head, root, rebuilt))
    })?;
    s.imported = true;
    s.head_seq = Some(head.seq);
    s.head_hash = head.hash;
    s.tree_root = Some(root);
    s.state_digest = Some(rebuilt.state_digest);
    s.projection_errors = Some(rebuilt.projection_errors);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_as_python_repr() {
        for (f, s) in [
            (1.0, "1.0"),
            (1e-05, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123.456, "123.456"),
            (0.5, "0.5"),
            (-0.0, "-0.0"),
            (1.5e-7, "1.5e-07"),
            (1e300, "1e+300"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-2.5e22, "-2.5e+22"),
            (f64::INFINITY, "Infinity"),
        ] {
            assert_eq!(py_float_repr(f), s, "{f}");
        }
    }

    #[test]
    fn the_original_test_vectors_recompute() {
        let l1 = r#"{"event_id":"e1","event_type":"target.registered","timestamp":"2026-01-24T10:00:00Z","actor_id":"sys","payload":{"target_id":"radix","name":"radix","repo_url":"u","default_branch":"main","extra":"x"},"prev_hash":null,"hash":"c6465f43989011527c7dbd3036b03e01cdbe3813f782f9aa7a612dea209fb4f7"}"#;
        let l = read_line(1, l1).unwrap();
        let t = hashed_text(&l, Form::ORIGINAL).unwrap();
        assert_eq!(
            t,
            r#"{"actor_id":"sys","event_id":"e1","event_type":"target.registered","payload":{"default_branch":"main","extra":"x","name":"radix","repo_url":"u","target_id":"radix"},"prev_hash":null,"timestamp":"2026-01-24T10:00:00+00:00"}"#
        );
        assert_eq!(hex::encode(Sha256::of(t.as_bytes()).0), l.hash);
        let l2 = r#"{"event_id":"e2","event_type":"custom.thing","timestamp":"2026-01-24T10:00:09.500000","actor_id":null,"payload":{"k":"é","n":1.0,"z":{"b":1,"a":[2]}},"prev_hash":"c6465f43989011527c7dbd3036b03e01cdbe3813f782f9aa7a612dea209fb4f7","hash":"fb9680e96de4c257ea3ca63e5e18c75c737a4accb082d32a9e5f5589fa5508c2"}"#;
        let l = read_line(2, l2).unwrap();
        let t = hashed_text(&l, Form::ORIGINAL).unwrap();
        assert_eq!(
            t,
            r#"{"actor_id":null,"event_id":"e2","event_type":"custom.thing","payload":{"k":"\u00e9","n":1.0,"z":{"a":[2],"b":1}},"prev_hash":"c6465f43989011527c7dbd3036b03e01cdbe3813f782f9aa7a612dea209fb4f7","timestamp":"2026-01-24T10:00:09.500000"}"#
        );
        assert_eq!(hex::encode(Sha256::of(t.as_bytes()).0), l.hash);
    }

    #[test]
    fn isoformat_as_python_writes_it() {
        for (a, b) in [
            ("2026-01-24T10:00:00Z", "2026-01-24T10:00:00+00:00"),
            ("2026-01-24T10:00:09.5", "2026-01-24T10:00:09.500000"),
            ("2026-01-24T10:00:09.000000", "2026-01-24T10:00:09"),
            (
                "2026-01-24T10:00:09.1234567+02:00",
                "2026-01-24T10:00:09.123456+02:00",
            ),
            ("2026-01-24", "2026-01-24T00:00:00"),
        ] {
            assert_eq!(py_isoformat(a).as_deref(), Some(b), "{a}");
        }
    }

    #[test]
    fn astral_characters_and_lone_surrogates_escape_as_python_does() {
        let v = py_loads(r#"{"b":"😀\u00e9\u007f","a":"\ud800x","a":"last"}"#).unwrap();
        let mut out = String::new();
        py_dumps(&v, Form::ORIGINAL, &mut out);
        assert_eq!(out, r#"{"a":"last","b":"\ud83d\ude00\u00e9\u007f"}"#);
        let v = py_loads(r#"["\ud800x"]"#).unwrap();
        let mut out = String::new();
        py_dumps(&v, Form::ORIGINAL, &mut out);
        assert_eq!(out, r#"["\ud800x"]"#);
    }
}
