//! Minimal JSON plumbing for the projector: an ordered, borrowing view of the
//! payload object, field type checks/normalisation, and an object writer.
//!
//! Values that need no normalisation are passed through as their raw JSON text
//! (the payload is RFC 8785 canonical text, so the raw text is already
//! canonical); nothing here iterates a hash map, so output order is the
//! payload's order.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A string that borrows from the input when it has no escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BStr<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for BStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(BStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The payload object: its members in document order, values as raw JSON.
/// A repeated key keeps its first position and its last value.
pub struct Entries<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut v: Vec<(Cow<'de, str>, &'de RawValue)> =
                    Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((k, val)) = map.next_entry::<BStr<'de>, &'de RawValue>()? {
                    if let Some(slot) = v.iter_mut().find(|(ek, _)| *ek == k.0) {
                        slot.1 = val;
                    } else {
                        v.push((k.0, val));
                    }
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Entries<'a> {
    pub fn parse(text: &'a str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// The raw value of `key`, if present (JSON `null` included).
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// What kind of JSON value a raw value is, for messages.
pub fn kind_of(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't') | Some(b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

pub fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// The decoded string, if `raw` is a JSON string.
pub fn as_str<'a>(raw: &'a RawValue) -> Option<Cow<'a, str>> {
    if raw.get().as_bytes().first() != Some(&b'"') {
        return None;
    }
    serde_json::from_str::<BStr<'a>>(raw.get()).ok().map(|s| s.0)
}

/// The parts of a decimal number `[+-]?digits[.digits][(e|E)[+-]?digits]`.
struct Num<'a> {
    neg: bool,
    int: &'a str,
    frac: &'a str,
    /// The exponent as written (`""` if none), and its value (saturated).
    exp_text: &'a str,
    exp: i64,
}

/// Parse decimal number text. `lax` (for strings) also allows a leading `+`
/// and leading zeros; JSON number text never has them.
fn parse_num(s: &str, lax: bool) -> Option<Num<'_>> {
    let b = s.as_bytes();
    let mut i = 0;
    let neg = match b.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') if lax => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = |i: &mut usize| {
        let st = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        st..*i
    };
    let int = digits(&mut i);
    if int.is_empty() || (!lax && int.len() > 1 && b[int.start] == b'0') {
        return None;
    }
    let mut frac = i..i;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        frac = digits(&mut i);
        if frac.is_empty() {
            return None;
        }
    }
    let (mut exp_text, mut exp) = ("", 0i64);
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let st = i;
        i += 1;
        let eneg = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let ed = digits(&mut i);
        if ed.is_empty() {
            return None;
        }
        for &c in &b[ed] {
            exp = (exp * 10 + (c - b'0') as i64).min(1_000_000);
        }
        if eneg {
            exp = -exp;
        }
        exp_text = &s[st..i];
    }
    if i != b.len() {
        return None;
    }
    Some(Num { neg, int: &s[int], frac: &s[frac], exp_text, exp })
}

impl Num<'_> {
    /// The exact integer value, if the number is integral and fits in i64.
    fn to_i64(&self) -> Option<i64> {
        let all = || self.int.bytes().chain(self.frac.bytes());
        if all().all(|c| c == b'0') {
            return Some(0);
        }
        // value = digits * 10^scale, digits without leading zeros.
        let scale = self.exp - self.frac.len() as i64;
        let n_digits = self.int.len() + self.frac.len();
        let keep = if scale >= 0 { n_digits } else { n_digits.checked_sub((-scale) as usize)? };
        // Digits dropped by a negative scale must all be zero.
        if all().skip(keep).any(|c| c != b'0') {
            return None;
        }
        let mut v: i128 = 0;
        for c in all().take(keep) {
            v = v * 10 + (c - b'0') as i128;
            if v > 1 << 64 {
                return None;
            }
        }
        for _ in 0..scale.max(0) {
            v *= 10;
            if v > 1 << 64 {
                return None;
            }
        }
        i64::try_from(if self.neg { -v } else { v }).ok()
    }

    /// Decimal exponent of the leading significant digit (None for zero).
    fn magnitude(&self) -> Option<i64> {
        let int = self.int.trim_start_matches('0');
        if !int.is_empty() {
            return Some(self.exp + int.len() as i64 - 1);
        }
        let lead = self.frac.bytes().position(|c| c != b'0')?;
        Some(self.exp - lead as i64 - 1)
    }
}

/// Lax integer (pydantic v2 lax mode): a JSON integer, an integral number
/// (`2.0`, `1e2`), or a string of a decimal integer (`"2"`, `"-3"`, `"+4"`).
/// Exact (no floating point); must fit in i64.
pub fn as_int(raw: &RawValue) -> Option<i64> {
    let t = raw.get();
    match t.as_bytes().first() {
        Some(b'"') => {
            let s = as_str(raw)?;
            let n = parse_num(&s, true)?;
            if !n.frac.is_empty() || !n.exp_text.is_empty() {
                return None;
            }
            n.to_i64()
        }
        Some(b'-') | Some(b'0'..=b'9') => parse_num(t, false)?.to_i64(),
        _ => None,
    }
}

/// A number: a JSON number (kept as its raw text) or a numeric string
/// (re-emitted as a JSON number: an integer if integral, else the decimal
/// text without a `+` sign or leading zeros). Returns the JSON text to emit.
pub fn as_float_json(raw: &RawValue) -> Option<Cow<'_, str>> {
    let t = raw.get();
    match t.as_bytes().first() {
        Some(b'-') | Some(b'0'..=b'9') => Some(Cow::Borrowed(t)),
        Some(b'"') => {
            let s = as_str(raw)?;
            let n = parse_num(&s, true)?;
            // Out of f64 range (finite numbers only).
            if n.magnitude().is_some_and(|m| m >= 308) {
                return None;
            }
            if let Some(i) = n.to_i64() {
                return Some(Cow::Owned(i.to_string()));
            }
            let int = n.int.trim_start_matches('0');
            let mut out = String::with_capacity(s.len() + 1);
            if n.neg {
                out.push('-');
            }
            out.push_str(if int.is_empty() { "0" } else { int });
            if !n.frac.is_empty() {
                out.push('.');
                out.push_str(n.frac);
            }
            out.push_str(n.exp_text);
            Some(Cow::Owned(out))
        }
        _ => None,
    }
}

pub fn as_bool(raw: &RawValue) -> Option<bool> {
    match raw.get() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// True if `raw` is an array whose items are all strings.
pub fn is_str_list(raw: &RawValue) -> bool {
    struct StrList;
    impl<'de> Deserialize<'de> for StrList {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = StrList;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a list of strings")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrList, A::Error> {
                    while seq.next_element::<BStr<'de>>()?.is_some() {}
                    Ok(StrList)
                }
            }
            d.deserialize_seq(V)
        }
    }
    raw.get().as_bytes().first() == Some(&b'[') && serde_json::from_str::<StrList>(raw.get()).is_ok()
}

/// RFC 3339 date-time → the same instant in UTC with a `Z` suffix.
///
/// Accepts `YYYY-MM-DD(T|t| )HH:MM:SS[.fraction](Z|z|±HH:MM)`. A time without
/// an offset (the original's workers send naive UTC) is read as UTC. The
/// fraction is kept digit for digit. Returns None if it is not a valid date-time.
pub fn normalize_datetime(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut n = 0u32;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + (c - b'0') as u32;
        }
        Some(n)
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)? as i64, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let frac_start = i;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let d0 = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == d0 {
            return None;
        }
    }
    let frac = &s[frac_start..i];
    let offset_min: i64 = match &b[i..] {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let _ = (h1, h2, m1, m2);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = (oh * 60 + om) as i64;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let (mut y, mut mo, mut d, mut h, mut mi) = (year, month, day, hour, minute);
    if offset_min != 0 {
        let total = days_from_civil(year, month, day) * 1440 + (hour * 60 + minute) as i64 - offset_min;
        let days = total.div_euclid(1440);
        let mins = total.rem_euclid(1440);
        (y, mo, d) = civil_from_days(days);
        h = (mins / 60) as u32;
        mi = (mins % 60) as u32;
        if !(1..=9999).contains(&y) {
            return None;
        }
    }
    Some(format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{second:02}{frac}Z"))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's civil calendar algorithms.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Append `s` as a JSON string literal.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &str = match c {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[(c >> 4) as usize] as char);
            out.push(HEX[(c & 15) as usize] as char);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// A property value, as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JVal<'a> {
    /// Raw JSON text, emitted as is.
    Raw(Cow<'a, str>),
    /// A string, emitted as a JSON string literal.
    Str(Cow<'a, str>),
}

impl<'a> JVal<'a> {
    pub const NULL: JVal<'static> = JVal::Raw(Cow::Borrowed("null"));
    pub fn str(s: &'a str) -> Self {
        JVal::Str(Cow::Borrowed(s))
    }
    pub fn raw(raw: &'a RawValue) -> Self {
        JVal::Raw(Cow::Borrowed(raw.get()))
    }
}

/// An ordered JSON object under construction. Setting an existing key replaces
/// its value in place (objects here have a few dozen keys at most).
#[derive(Debug, Default)]
pub struct Obj<'a> {
    members: Vec<(Cow<'a, str>, JVal<'a>)>,
}

impl<'a> Obj<'a> {
    pub fn with_capacity(n: usize) -> Self {
        Obj { members: Vec::with_capacity(n) }
    }

    pub fn set(&mut self, key: impl Into<Cow<'a, str>>, val: JVal<'a>) {
        let key = key.into();
        if let Some(slot) = self.members.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = val;
        } else {
            self.members.push((key, val));
        }
    }

    pub fn get(&self, key: &str) -> Option<&JVal<'a>> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// True if `key` is absent or null.
    pub fn is_unset(&self, key: &str) -> bool {
        match self.get(key) {
            None => true,
            Some(JVal::Raw(r)) => r == "null",
            Some(JVal::Str(_)) => false,
        }
    }

    pub fn to_json(&self) -> String {
        let mut cap = 2;
        for (k, v) in &self.members {
            cap += k.len() + 4 + match v {
                JVal::Raw(r) => r.len(),
                JVal::Str(s) => s.len() + 2,
            };
        }
        let mut out = String::with_capacity(cap + cap / 8);
        out.push('{');
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(&mut out, k);
            out.push(':');
            match v {
                JVal::Raw(r) => out.push_str(r),
                JVal::Str(s) => write_str(&mut out, s),
            }
        }
        out.push('}');
        out
    }
}
