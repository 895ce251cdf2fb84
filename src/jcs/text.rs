//! JCS straight from JSON text, without building a `serde_json::Value`: what
//! ingest does with every payload. A `Value` tree of dense JSON costs many
//! times its text (`[0,0,…]` of 1 MiB is ~17 MiB of `Value`s), and a bundle's
//! payloads were all held at once; here each payload's canonical bytes are
//! written as the text is read, so a payload costs about its canonical size
//! (objects are reordered in place, one copy of the object at a time).
//!
//! The bytes must equal [`super::CanonicalJson::of`] of the `Value`
//! serde_json would read from the same text (the tests compare the two on
//! random values): the same deserializer drives both (numbers reach
//! [`super::write_number`] as the same `i64`/`u64`/`f64`), and members are
//! ordered as [`super::write_object`] orders a map's keys. Unlike a `Value`,
//! an object with a repeated key is refused (RFC 8785 assumes I-JSON).

use super::{write_number, write_str, CanonicalJson};
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use std::cmp::Ordering;
use std::fmt;

/// What [`CanonicalJson::from_text`] made of a text.
#[derive(Debug)]
pub enum FromText {
    /// The canonical form, and the top-level member named by `watch` if it is
    /// a string.
    Canonical(CanonicalJson, Option<String>),
    /// The canonical form would be this many bytes, more than the limit; it
    /// was counted, not kept.
    TooLarge(usize),
}

/// Why a text has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextError {
    /// Where, as a JSON path below the text's root (`b.c[1]`), or empty for
    /// the root itself.
    pub path: String,
    /// serde_json's message, without its line and column (they count from
    /// the start of this text, not of whatever held it).
    pub message: String,
    /// Whether the text is not JSON at all (as opposed to JSON this refuses:
    /// a repeated key).
    pub syntax: bool,
}

impl CanonicalJson {
    /// `JCS(text)`, kept only while it is at most `limit` bytes (beyond that
    /// its length is counted and [`FromText::TooLarge`] says it). `watch`
    /// names a top-level member whose string value is returned beside it.
    pub fn from_text(text: &str, limit: usize, watch: &str) -> Result<FromText, TextError> {
        let mut sink = Sink::new(limit, watch);
        sink.out.reserve(text.len().min(limit).min(64 * 1024) + 16);
        let mut de = serde_json::Deserializer::from_str(text);
        let read = Canon(&mut sink)
            .deserialize(&mut de)
            .and_then(|()| de.end());
        if let Err(untracked) = read {
            return Err(locate(text, limit, watch, untracked));
        }
        // Every value ends with its `check`, the root's too.
        if sink.counting {
            return Ok(FromText::TooLarge(sink.counted));
        }
        let text = String::from_utf8(sink.out).expect("JCS output is UTF-8");
        Ok(FromText::Canonical(CanonicalJson(text), sink.watched))
    }
}

/// The error of a text that failed, with the path of what failed: read again
/// with the path tracked (only failures pay for it).
fn locate(text: &str, limit: usize, watch: &str, untracked: serde_json::Error) -> TextError {
    let mut sink = Sink::new(limit, watch);
    let mut de = serde_json::Deserializer::from_str(text);
    let mut track = serde_path_to_error::Track::new();
    let tracked =
        Canon(&mut sink).deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track));
    let (path, error) = match tracked {
        Err(e) => (track.path().to_string(), e),
        Ok(()) => (".".to_string(), untracked),
    };
    let message = error.to_string();
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    TextError {
        // "." is the root; "?" an error serde_path_to_error could not place
        // (the end of the text).
        path: if path == "." || path == "?" {
            String::new()
        } else {
            path
        },
        message,
        syntax: error.is_syntax() || error.is_eof(),
    }
}

/// Where canonical bytes go: `out` while they fit the limit, then only
/// their count.
struct Sink<'w> {
    out: Vec<u8>,
    /// The canonical length once `counting` (`out` is then dropped).
    counted: usize,
    counting: bool,
    limit: usize,
    /// Objects open around the value being read (1 inside the root object).
    depth: usize,
    watch: &'w str,
    watched: Option<String>,
    /// A counted scalar's bytes, reused.
    scratch: Vec<u8>,
    /// The keys and members of the objects open (each object uses the tail
    /// past its parent's and truncates back), and the copy an object is
    /// reordered from: reused, not allocated per object.
    keys: String,
    members: Vec<Member>,
    copy: Vec<u8>,
}

impl<'w> Sink<'w> {
    fn new(limit: usize, watch: &'w str) -> Sink<'w> {
        Sink {
            out: Vec::new(),
            counted: 0,
            counting: false,
            limit,
            depth: 0,
            watch,
            watched: None,
            scratch: Vec::new(),
            keys: String::new(),
            members: Vec::new(),
            copy: Vec::new(),
        }
    }

    fn emit(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.counting {
            self.scratch.clear();
            write(&mut self.scratch);
            self.counted += self.scratch.len();
        } else {
            write(&mut self.out);
        }
    }

    /// [`Sink::emit`] of `"key":` for the key at `key` in the key arena.
    fn emit_key(&mut self, key: std::ops::Range<usize>) {
        let Sink {
            out,
            keys,
            scratch,
            counting,
            counted,
            ..
        } = self;
        let sink = if *counting {
            scratch.clear();
            &mut *scratch
        } else {
            &mut *out
        };
        write_str(&keys[key], sink);
        sink.push(b':');
        if *counting {
            *counted += scratch.len();
        }
    }

    /// Takes back a separator written before a member or element that did
    /// not come. Never after [`Sink::check`], so it is still in `out` when
    /// not counting.
    fn retract(&mut self) {
        if self.counting {
            self.counted -= 1;
        } else {
            self.out.pop();
        }
    }

    /// Past the limit: stop keeping bytes, count them. Called after whole
    /// values only, so a retracted separator never crosses it.
    fn check(&mut self) {
        if !self.counting && self.out.len() > self.limit {
            self.counting = true;
            self.counted = self.out.len();
            self.out = Vec::new();
        }
    }

    fn position(&self) -> usize {
        self.out.len()
    }
}

/// Writes the value it reads into its sink.
struct Canon<'s, 'w>(&'s mut Sink<'w>);

impl<'de> DeserializeSeed<'de> for Canon<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canon<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.0
            .emit(|o| o.extend_from_slice(if b { b"true" } else { b"false" }));
        self.0.check();
        Ok(())
    }
    fn visit_i64<E>(self, n: i64) -> Result<(), E> {
        self.0.emit(|o| write_number(&Number::from(n), o));
        self.0.check();
        Ok(())
    }
    fn visit_u64<E>(self, n: u64) -> Result<(), E> {
        self.0.emit(|o| write_number(&Number::from(n), o));
        self.0.check();
        Ok(())
    }
    fn visit_f64<E>(self, f: f64) -> Result<(), E> {
        // As serde_json's `Value` reads it (JSON text has no NaN or infinity).
        match Number::from_f64(f) {
            Some(n) => self.0.emit(|o| write_number(&n, o)),
            None => self.0.emit(|o| o.extend_from_slice(b"null")),
        }
        self.0.check();
        Ok(())
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.0.emit(|o| write_str(s, o));
        self.0.check();
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.emit(|o| o.extend_from_slice(b"null"));
        self.0.check();
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        self.0.emit(|o| o.extend_from_slice(b"null"));
        self.0.check();
        Ok(())
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let sink = self.0;
        sink.emit(|o| o.push(b'['));
        let mut first = true;
        loop {
            if !first {
                sink.emit(|o| o.push(b','));
            }
            if seq.next_element_seed(Canon(sink))?.is_none() {
                if !first {
                    sink.retract();
                }
                break;
            }
            first = false;
        }
        sink.emit(|o| o.push(b']'));
        sink.check();
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let sink = self.0;
        sink.depth += 1;
        sink.emit(|o| o.push(b'{'));
        let body_start = sink.position();
        let (keys_base, members_base) = (sink.keys.len(), sink.members.len());
        loop {
            let first = sink.members.len() == members_base;
            if !first {
                sink.emit(|o| o.push(b','));
            }
            let key_start = sink.keys.len();
            if map.next_key_seed(KeySeed(&mut sink.keys))?.is_none() {
                if !first {
                    sink.retract();
                }
                break;
            }
            let key = key_start..sink.keys.len();
            let start = sink.position();
            sink.emit_key(key.clone());
            let value_start = sink.position();
            map.next_value_seed(Canon(sink))?;
            if sink.depth == 1
                && !sink.counting
                && sink.keys[key.clone()] == *sink.watch
                && sink.out.get(value_start) == Some(&b'"')
            {
                sink.watched = serde_json::from_slice(&sink.out[value_start..]).ok();
            }
            let bytes = start..sink.position();
            sink.members.push(Member { key, bytes });
        }
        if !sink.counting {
            let Sink {
                out,
                keys,
                members,
                copy,
                ..
            } = &mut *sink;
            order_members(out, body_start, keys, &mut members[members_base..], copy)
                .map_err(serde::de::Error::custom)?;
        }
        sink.keys.truncate(keys_base);
        sink.members.truncate(members_base);
        sink.emit(|o| o.push(b'}'));
        sink.depth -= 1;
        sink.check();
        Ok(())
    }
}

/// One member of an object being written: its key in the object's key
/// arena, its `"key":value` bytes in the sink.
struct Member {
    key: std::ops::Range<usize>,
    bytes: std::ops::Range<usize>,
}

/// Puts an object's members (written in the text's order from `body_start`,
/// comma-separated) in JCS order, or refuses a repeated key.
fn order_members(
    out: &mut Vec<u8>,
    body_start: usize,
    keys: &str,
    members: &mut [Member],
    copy: &mut Vec<u8>,
) -> Result<(), String> {
    let key = |m: &Member| &keys[m.key.clone()];
    // As `super::write_object`: UTF-8 byte order is UTF-16 order unless a
    // key has a byte >= 0xEE.
    let by_utf16 = members.iter().any(|m| key(m).bytes().any(|b| b >= 0xEE));
    let compare = |a: &Member, b: &Member| -> Ordering {
        if by_utf16 {
            key(a).encode_utf16().cmp(key(b).encode_utf16())
        } else {
            key(a).cmp(key(b))
        }
    };
    let in_order = members
        .windows(2)
        .all(|w| compare(&w[0], &w[1]) == Ordering::Less);
    if in_order {
        return Ok(());
    }
    members.sort_by(compare);
    if let Some(w) = members.windows(2).find(|w| key(&w[0]) == key(&w[1])) {
        return Err(format!(
            "duplicate key {:?} in an object (JSON objects in a payload must have unique \
             keys: RFC 8785, I-JSON)",
            key(&w[0])
        ));
    }
    copy.clear();
    copy.extend_from_slice(&out[body_start..]);
    out.truncate(body_start);
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&copy[m.bytes.start - body_start..m.bytes.end - body_start]);
    }
    Ok(())
}

/// Appends a member's key to its object's key arena.
struct KeySeed<'k>(&'k mut String);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.0.push_str(s);
        Ok(())
    }
}
