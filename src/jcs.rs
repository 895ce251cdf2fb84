//! RFC 8785 (JCS) canonical JSON of `serde_json` values, written straight
//! into a byte buffer: event payloads (hashed into the chain) and, through
//! `graph::canonical`, the op lists of the rolling state digest. Both are
//! persisted and documented (docs/HASHING.md), so this must produce exactly
//! the bytes of `serde_json_canonicalizer` 0.4.1 (over serde_json without
//! `preserve_order` / `arbitrary_precision`), only without the generic
//! serializer's per-key buffers, re-parsed keys and sorted sets (~3x faster).
//! The tests below compare the two byte for byte. It must never depend on
//! anything but the value.
//!
//! What the crate emits, and so what this writes:
//! - objects: members sorted by the UTF-16 code units of their names; each op
//!   is an object whose members (its fields plus the `"op"` tag) are written
//!   here in that order, by hand;
//! - strings: raw UTF-8 except `\"`, `\\`, `\b \f \n \r \t`, and the other
//!   control characters U+0000..U+001F as `\u00xx` in lower-case hex (DEL and
//!   everything above are raw; `/` is never escaped);
//! - numbers: every number as an IEEE-754 double printed the ECMAScript way by
//!   `ryu-js` — integers are converted with `as f64` first, so magnitudes above
//!   2^53 are rounded (`u64::MAX` → `18446744073709552000`, `1e21` and up in
//!   exponent form), and `-0` prints as `0`. Integers of magnitude up to 2^53
//!   are exact doubles and print as their plain decimal digits, which is done
//!   here without going through a double.

use serde_json::{Map, Number, Value};

mod text;
pub use text::{FromText, TextError};

/// Text that is RFC 8785 canonical JSON. Only this module builds one, from a
/// value it canonicalizes ([`CanonicalJson::of`]), so a function that takes
/// one (e.g. `EventDraft::new` for a payload) gets canonical bytes by type
/// rather than by a comment.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CanonicalJson(String);

impl CanonicalJson {
    /// `JCS(value)`.
    pub fn of(value: &Value) -> CanonicalJson {
        CanonicalJson(to_string(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for CanonicalJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CanonicalJson({})", self.0)
    }
}

/// `JCS(value)` as a string (what `serde_json_canonicalizer::to_string` gives).
pub fn to_string(value: &Value) -> String {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out);
    // Only whole UTF-8 strings and ASCII are written.
    String::from_utf8(out).expect("JCS output is UTF-8")
}

/// Appends `JCS(value)` to `out`. Infallible: a `serde_json::Value` holds
/// only finite numbers and string keys, so nothing the crate could reject
/// reaches it.
pub(crate) fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => write_array(items, out, write_value),
        Value::Object(map) => write_object(map, out),
    }
}

/// Appends a JSON array of `items` to `out`, each written by `write`.
pub(crate) fn write_array<T>(items: &[T], out: &mut Vec<u8>, write: impl Fn(&T, &mut Vec<u8>)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(item, out);
    }
    out.push(b']');
}

/// Appends `JCS(map)` (an object) to `out`.
pub(crate) fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    out.push(b'{');
    // serde_json's `Map` (a `BTreeMap` here) iterates in UTF-8 byte order,
    // which is code point order. That equals UTF-16 code unit order except
    // between a character in U+E000..U+FFFF (UTF-8 lead byte 0xEE/0xEF) and
    // one above U+FFFF (a surrogate pair, 0xD800.. in UTF-16): so only keys
    // with a byte >= 0xEE can need a re-sort.
    if map.keys().all(|k| k.bytes().all(|b| b < 0xEE)) {
        for (i, (k, v)) in map.iter().enumerate() {
            write_member(i, k, v, out);
        }
    } else {
        let mut members: Vec<(&String, &Value)> = map.iter().collect();
        members.sort_unstable_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
        for (i, (k, v)) in members.into_iter().enumerate() {
            write_member(i, k, v, out);
        }
    }
    out.push(b'}');
}

fn write_member(i: usize, key: &str, value: &Value, out: &mut Vec<u8>) {
    if i > 0 {
        out.push(b',');
    }
    write_str(key, out);
    out.push(b':');
    write_value(value, out);
}

/// Whether `JCS(value)` parses back (serde_json) to a `Value` equal to
/// `value`: true unless it holds a float (written in its shortest double form,
/// `1.0` → `1`) or an integer beyond ±2^53 (written rounded, as a double).
pub(crate) fn reads_back_equal(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u <= EXACT_INT,
            (None, Some(i)) => i.unsigned_abs() <= EXACT_INT,
            (None, None) => false,
        },
        Value::Array(items) => items.iter().all(reads_back_equal),
        Value::Object(map) => map.values().all(reads_back_equal),
    }
}

/// 2^53: every integer of at most this magnitude is an exact double.
const EXACT_INT: u64 = 1 << 53;

fn write_number(n: &Number, out: &mut Vec<u8>) {
    if let Some(u) = n.as_u64() {
        if u <= EXACT_INT {
            write_digits(u, out);
        } else {
            write_f64(u as f64, out);
        }
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() <= EXACT_INT {
            if i < 0 {
                out.push(b'-');
            }
            write_digits(i.unsigned_abs(), out);
        } else {
            write_f64(i as f64, out);
        }
    } else {
        match n.as_f64() {
            Some(f) if f.is_finite() => write_f64(f, out),
            // Unreachable with serde_json's `Number` (finite only); serde_json's
            // serializer writes a non-finite float as `null`, and so does this.
            _ => out.extend_from_slice(b"null"),
        }
    }
}

/// ECMAScript `Number.prototype.toString` of a finite double (`-0` → `0`).
fn write_f64(f: f64, out: &mut Vec<u8>) {
    let mut buf = ryu_js::Buffer::new();
    out.extend_from_slice(buf.format_finite(f).as_bytes());
}

/// Appends the decimal digits of `v`.
pub(crate) fn write_digits(mut v: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

/// A JSON string with JCS escaping (serde_json's escape set, the crate's
/// lower-case `\u00xx`).
pub(crate) fn write_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut control = *b"\\u00xx";
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => {
                control[4] = HEX[(b >> 4) as usize];
                control[5] = HEX[(b & 0xf) as usize];
                &control
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        out.extend_from_slice(short);
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::canonical::write_ops;
    use crate::graph::model::{NodeId, Op, Properties};
    use serde_json::{json, Map};

    /// A node id for an op; an op cannot carry an empty one, so the empty
    /// string (which the generators produce) becomes "-".
    fn nid(s: &str) -> NodeId {
        NodeId::new("node id", if s.is_empty() { "-" } else { s }).expect("not empty")
    }

    fn jcs<T: serde::Serialize>(v: &T) -> Vec<u8> {
        serde_json_canonicalizer::to_vec(v).expect("crate encodes")
    }

    fn ours(ops: &[Op]) -> Vec<u8> {
        let mut out = Vec::new();
        write_ops(ops, &mut out);
        out
    }

    #[track_caller]
    fn same_ops(ops: &[Op]) {
        let want = jcs(&ops);
        let got = ours(ops);
        assert!(
            got == want,
            "encodings differ for {ops:?}\n crate: {}\n  ours: {}",
            String::from_utf8_lossy(&want),
            String::from_utf8_lossy(&got)
        );
    }

    #[track_caller]
    fn same_value(v: &Value) {
        let want = jcs(v);
        let mut got = Vec::new();
        write_value(v, &mut got);
        assert!(
            got == want,
            "encodings differ for {v:?}\n crate: {}\n  ours: {}",
            String::from_utf8_lossy(&want),
            String::from_utf8_lossy(&got)
        );
    }

    fn props(v: Value) -> Properties {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn every_variant(p: &Properties) -> Vec<Op> {
        vec![
            Op::PutNode {
                id: nid("n1"),
                node_type: "Attempt".into(),
                properties: p.clone(),
            },
            Op::MergeNode {
                id: nid("n2"),
                node_type: "Run".into(),
                properties: p.clone(),
                create_if_absent: true,
            },
            Op::MergeNode {
                id: nid("n3"),
                node_type: "Run".into(),
                properties: Map::new(),
                create_if_absent: false,
            },
            Op::DeleteNode { id: nid("n4") },
            Op::PutEdge {
                edge_type: "OWNS".into(),
                from: nid("n1"),
                to: nid("n2"),
                properties: p.clone(),
            },
            Op::DeleteEdge {
                edge_type: "OWNS".into(),
                from: nid("n1"),
                to: nid("n2"),
            },
        ]
    }

    /// Strings that exercise every escaping rule and the ordering corner.
    fn tricky_strings() -> Vec<String> {
        let mut v: Vec<String> = (0u8..0x20).map(|b| char::from(b).to_string()).collect();
        v.extend(
            [
                "",
                "\u{7f}",
                "\"",
                "\\",
                "/",
                "\\\"\\",
                "a\"b\\c\nd\u{1}e\u{1f}f\u{7f}",
                "é",
                "\u{2028}\u{2029}",
                "\u{D7FF}",
                "\u{E000}",
                "\u{FEFF}",
                "\u{FF61}",
                "\u{FFFF}",
                "\u{10000}",
                "\u{1F600}",
                "\u{10FFFF}",
                "a\u{1F600}b\u{FF61}c",
                "\u{0}\u{1F600}\t",
            ]
            .map(String::from),
        );
        v
    }

    #[test]
    fn serde_json_map_is_byte_sorted() {
        // The fast path relies on this (a `preserve_order` feature turned on
        // by any crate in the build would break it; the tests below would too).
        let mut m = Map::new();
        m.insert("b".into(), Value::Null);
        m.insert("a".into(), Value::Null);
        m.insert("\u{1F600}".into(), Value::Null);
        m.insert("\u{FF61}".into(), Value::Null);
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "b", "\u{FF61}", "\u{1F600}"]);
    }

    #[test]
    fn empty_and_every_variant() {
        same_ops(&[]);
        let p =
            props(json!({"b": 1, "a": "x", "nested": {"z": [1, {"y": null, "x": true}], "a": []}}));
        let ops = every_variant(&p);
        same_ops(&ops);
        for op in &ops {
            same_ops(std::slice::from_ref(op));
        }
        assert_eq!(ours(&[]), b"[]");
        assert_eq!(
            ours(&[Op::DeleteEdge {
                edge_type: "E".into(),
                from: nid("a"),
                to: nid("b")
            }]),
            br#"[{"edge_type":"E","from":"a","op":"delete_edge","to":"b"}]"#
        );
    }

    #[test]
    fn strings_as_fields_values_and_keys() {
        let strings = tricky_strings();
        for s in &strings {
            same_value(&Value::String(s.clone()));
            let mut p = Map::new();
            p.insert(s.clone(), Value::String(s.clone()));
            same_ops(&[
                Op::PutNode {
                    id: nid(s),
                    node_type: s.clone(),
                    properties: p.clone(),
                },
                Op::PutEdge {
                    edge_type: s.clone(),
                    from: nid(s),
                    to: nid(s),
                    properties: p,
                },
            ]);
        }
        // All of them as keys of one object: UTF-8 and UTF-16 order differ
        // (U+E000..U+FFFF against astral characters).
        let all: Map<String, Value> = strings
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), Value::from(i)))
            .collect();
        same_value(&Value::Object(all.clone()));
        same_ops(&every_variant(&all));

        let mut m = Map::new();
        m.insert("\u{FF61}".into(), Value::from(1));
        m.insert("\u{1F600}".into(), Value::from(2));
        let mut got = Vec::new();
        write_value(&Value::Object(m.clone()), &mut got);
        assert_eq!(got, "{\"\u{1F600}\":2,\"\u{FF61}\":1}".as_bytes());
        same_value(&Value::Object(m));
    }

    #[test]
    fn control_characters_use_lower_case_hex() {
        let all: String = (0u8..0x20).map(char::from).collect::<String>() + "\u{7f}";
        let mut got = Vec::new();
        write_str(&all, &mut got);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\
             \\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\
             \\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\u{7f}\""
        );
        same_value(&Value::String(all));
    }

    #[test]
    fn numbers() {
        let ints: Vec<Value> = vec![
            json!(0),
            json!(1),
            json!(-1),
            json!(i64::MIN),
            json!(i64::MIN + 1),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(u64::MAX - 1),
            json!(1u64 << 53),
            json!((1u64 << 53) - 1),
            json!((1u64 << 53) + 1),
            json!((1u64 << 53) + 2),
            json!(-(1i64 << 53)),
            json!(-(1i64 << 53) + 1),
            json!(-(1i64 << 53) - 1),
            json!(-(1i64 << 53) - 2),
            json!(999_999_999_999_999_999u64),
            json!(1_000_000_000_000_000_000u64),
            json!(10_000_000_000_000_000_000u64),
        ];
        let floats = [
            0.1,
            -0.1,
            0.0,
            -0.0,
            1.0,
            -1.0,
            1.5,
            100.0,
            1e20,
            1e21,
            -1e21,
            1e-6,
            1e-7,
            1.234e-7,
            123e-20,
            5e-324,
            -5e-324,
            2.2250738585072014e-308,
            1.7976931348623157e308,
            -1.7976931348623157e308,
            123456789012345680000.0,
            9007199254740993.0,
            18446744073709551616.0,
            4.35,
            0.3,
            0.1 + 0.2,
            1e300,
            333333333.3333333,
        ];
        let mut all = ints.clone();
        all.extend(floats.iter().map(|&f| json!(f)));
        for v in &all {
            same_value(v);
        }
        // `reads_back_equal` never vouches for a value that JCS changes, and
        // vouches for every integer within ±2^53.
        let mut exact = 0;
        for v in &all {
            let wrapped = json!({"v": v, "in": [v]});
            let back: Value = serde_json::from_str(&to_string(&wrapped)).unwrap();
            if reads_back_equal(&wrapped) {
                assert_eq!(back, wrapped);
                exact += 1;
            }
        }
        // 0, 1, -1, ±2^53 and ±(2^53 - 1).
        assert_eq!(exact, 7);
        let spot = |v: Value| {
            let mut got = Vec::new();
            write_value(&v, &mut got);
            String::from_utf8(got).unwrap()
        };
        assert_eq!(spot(json!(u64::MAX)), "18446744073709552000");
        assert_eq!(spot(json!(i64::MIN)), "-9223372036854776000");
        assert_eq!(spot(json!((1u64 << 53) + 1)), "9007199254740992");
        assert_eq!(spot(json!(-0.0)), "0");
        assert_eq!(spot(json!(1e21)), "1e+21");
        assert_eq!(spot(json!(1e-7)), "1e-7");
        assert_eq!(spot(json!(5e-324)), "5e-324");
        assert_eq!(
            spot(json!(123456789012345680000.0)),
            "123456789012345680000"
        );
        let p: Properties = all
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("k{i}"), v))
            .collect();
        same_ops(&every_variant(&p));
        // Parsed from text the way events arrive, `-0` is a float.
        same_value(&serde_json::from_str::<Value>("[-0, -0.0, 0e5, 12e1, 1e-400]").unwrap());
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn string(&mut self) -> String {
            const PALETTE: &[char] = &[
                'a',
                'b',
                'z',
                'A',
                '0',
                '9',
                ' ',
                '_',
                ':',
                '/',
                '"',
                '\\',
                '\u{0}',
                '\u{1}',
                '\u{8}',
                '\t',
                '\n',
                '\u{b}',
                '\u{c}',
                '\r',
                '\u{1f}',
                '\u{7f}',
                '\u{80}',
                'é',
                'ß',
                '\u{7ff}',
                '\u{800}',
                '€',
                '\u{2028}',
                '\u{D7FF}',
                '\u{E000}',
                '\u{F8FF}',
                '\u{FEFF}',
                '\u{FF61}',
                '\u{FFFD}',
                '\u{FFFF}',
                '\u{10000}',
                '😀',
                '🦀',
                '\u{10FFFF}',
            ];
            let len = match self.below(4) {
                0 => 0,
                1 => 1 + self.below(3),
                _ => self.below(12),
            };
            let mut s = String::new();
            for _ in 0..len {
                if self.below(3) == 0 {
                    s.push(char::from(b'a' + self.below(26) as u8));
                } else {
                    s.push(PALETTE[self.below(PALETTE.len() as u64) as usize]);
                }
            }
            s
        }
        fn number(&mut self) -> Value {
            match self.below(10) {
                0 => Value::from(self.below(1000)),
                1 => Value::from(-(self.below(1000) as i64)),
                2 => Value::from(self.next()),
                3 => Value::from(self.next() as i64),
                4 => {
                    // Around 2^53.
                    let d = self.below(9) as i64 - 4;
                    let base = 1i64 << 53;
                    if self.below(2) == 0 {
                        Value::from(base + d)
                    } else {
                        Value::from(-base + d)
                    }
                }
                5 => Value::from(self.next() >> self.below(64)),
                6 | 7 => {
                    // Any finite double, all exponents.
                    loop {
                        let f = f64::from_bits(self.next());
                        if let Some(n) = Number::from_f64(f) {
                            break Value::Number(n);
                        }
                    }
                }
                _ => {
                    // Short decimals across the plain/exponent boundaries.
                    let mantissa = self.below(100_000) as f64;
                    let exp = self.below(60) as i32 - 30;
                    let f = mantissa * 10f64.powi(exp);
                    let f = if self.below(2) == 0 { f } else { -f };
                    Value::Number(Number::from_f64(f).expect("finite"))
                }
            }
        }
        fn value(&mut self, depth: u32) -> Value {
            let top = if depth == 0 { 5 } else { 7 };
            match self.below(top) {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 0),
                2 => self.number(),
                3 | 4 => Value::String(self.string()),
                5 => Value::Array((0..self.below(5)).map(|_| self.value(depth - 1)).collect()),
                _ => Value::Object(self.object(depth - 1)),
            }
        }
        fn object(&mut self, depth: u32) -> Properties {
            (0..self.below(7))
                .map(|_| (self.string(), self.value(depth)))
                .collect()
        }
        fn op(&mut self) -> Op {
            match self.below(5) {
                0 => Op::PutNode {
                    id: nid(&self.string()),
                    node_type: self.string(),
                    properties: self.object(3),
                },
                1 => Op::MergeNode {
                    id: nid(&self.string()),
                    node_type: self.string(),
                    properties: self.object(3),
                    create_if_absent: self.below(2) == 0,
                },
                2 => Op::DeleteNode {
                    id: nid(&self.string()),
                },
                3 => Op::PutEdge {
                    edge_type: self.string(),
                    from: nid(&self.string()),
                    to: nid(&self.string()),
                    properties: self.object(3),
                },
                _ => Op::DeleteEdge {
                    edge_type: self.string(),
                    from: nid(&self.string()),
                    to: nid(&self.string()),
                },
            }
        }
    }

    #[test]
    fn random_values_match_the_crate() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..4000 {
            same_value(&rng.value(4));
        }
        for _ in 0..4000 {
            same_value(&rng.number());
        }
    }

    /// Writes `v` as JSON text the way a client might: members in any order,
    /// any whitespace, characters escaped or not, numbers spelled as
    /// serde_json writes them.
    fn scrambled(rng: &mut Rng, v: &Value, out: &mut String) {
        let space = |rng: &mut Rng, out: &mut String| {
            for _ in 0..rng.below(3) {
                out.push([' ', '\n', '\t', '\r'][rng.below(4) as usize]);
            }
        };
        space(rng, out);
        match v {
            Value::String(s) => scrambled_str(rng, s, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    scrambled(rng, item, out);
                }
                space(rng, out);
                out.push(']');
            }
            Value::Object(map) => {
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                for i in (1..members.len()).rev() {
                    members.swap(i, rng.below(i as u64 + 1) as usize);
                }
                out.push('{');
                for (i, (k, v)) in members.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    space(rng, out);
                    scrambled_str(rng, k, out);
                    space(rng, out);
                    out.push(':');
                    scrambled(rng, v, out);
                }
                space(rng, out);
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
        space(rng, out);
    }

    fn scrambled_str(rng: &mut Rng, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            if c < ' ' || c == '"' || c == '\\' || rng.below(4) == 0 {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04X}"));
                }
            } else {
                out.push(c);
            }
        }
        out.push('"');
    }

    #[track_caller]
    fn from_text_as_value(text: &str) {
        let value: Value = serde_json::from_str(text).expect("valid JSON");
        let want = CanonicalJson::of(&value);
        let watched = match &value {
            Value::Object(m) => m.get("k").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        match CanonicalJson::from_text(text, usize::MAX, "k") {
            Ok(FromText::Canonical(got, w)) => {
                assert_eq!(got, want, "{text}");
                assert_eq!(w, watched, "{text}");
            }
            other => panic!("{text}: {other:?}"),
        }
        // At the limit it is kept; one byte under, only its length is told.
        match CanonicalJson::from_text(text, want.len(), "k") {
            Ok(FromText::Canonical(got, _)) => assert_eq!(got, want, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
        match CanonicalJson::from_text(text, want.len() - 1, "k") {
            Ok(FromText::TooLarge(n)) => assert_eq!(n, want.len(), "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }

    /// Canonical bytes read straight from text are those of the `Value`
    /// serde_json reads from it.
    #[test]
    fn random_texts_canonicalize_as_their_values() {
        let mut rng = Rng(0xA076_1D64_78BD_642F);
        for round in 0..4000 {
            let mut value = rng.value(4);
            if round % 3 == 0 {
                let mut top = rng.object(3);
                top.insert("k".into(), rng.value(1));
                value = Value::Object(top);
            }
            let mut text = String::new();
            scrambled(&mut rng, &value, &mut text);
            from_text_as_value(&text);
        }
        for text in [
            "[-0, -0.0, 0e5, 12e1, 1e-400, 1E2, 1e20, 1e21, 18446744073709551616]",
            "{\"k\": \"\\ud83d\\ude00\\n\", \"a\": {\"k\": \"no\"}}",
            "{\"k\": 1}",
            "{\"\\ue000\": 1, \"\\ud800\\udc00\": 2, \"\": 3}",
            "{}",
            "[]",
            "\"\"",
        ] {
            from_text_as_value(text);
        }
    }

    #[test]
    fn texts_with_a_repeated_key_or_bad_json_are_refused_at_their_path() {
        for (text, path, syntax) in [
            (r#"{"a": 1, "a": 1}"#, "", false),
            (r#"{"b": [0, {"x": 1, "y": {}, "x": 2}]}"#, "b[1]", false),
            (r#"{"\u0061": 1, "a": 2}"#, "", false),
            (r#"{"a": 1e400}"#, "a", true),
            (r#"{"a": 1"#, "", true),
            (r#"{"a": 1} x"#, "", true),
        ] {
            let err = CanonicalJson::from_text(text, usize::MAX, "k").unwrap_err();
            assert_eq!(err.path, path, "{text}: {err:?}");
            assert_eq!(err.syntax, syntax, "{text}: {err:?}");
            assert!(!err.message.contains(" at line "), "{err:?}");
            if !syntax {
                assert!(err.message.contains("duplicate key"), "{err:?}");
            }
        }
    }

    #[test]
    fn random_op_lists_match_the_crate() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let mut buf = Vec::new();
        for _ in 0..3000 {
            let ops: Vec<Op> = (0..rng.below(6)).map(|_| rng.op()).collect();
            // Appends: the caller reuses one buffer.
            buf.clear();
            buf.extend_from_slice(b"prefix");
            write_ops(&ops, &mut buf);
            assert_eq!(&buf[..6], b"prefix");
            assert!(buf[6..] == jcs(&ops), "encodings differ for {ops:?}");
        }
    }
}
