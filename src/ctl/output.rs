//! Output for people and for scripts. Tables have aligned columns (by display
//! width, so accents and wide characters line up), colour only when stdout is a
//! terminal and `NO_COLOR` is unset or empty, and control characters from the
//! server's data escaped so that an event payload cannot drive the terminal.
//! `--json` output goes through [`Out::raw`]: the server's bytes unchanged.

use super::error::CtlError;
use serde_json::Value;
use std::io::{IsTerminal, Write};
use unicode_width::UnicodeWidthStr;

/// Whether colour is wanted on a stream that is (or is not) a terminal.
pub fn colour_wanted(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Bold,
    Dim,
    Green,
    Red,
    Yellow,
    Cyan,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Plain => "",
            Style::Bold => "\x1b[1m",
            Style::Dim => "\x1b[2m",
            Style::Green => "\x1b[32m",
            Style::Red => "\x1b[31m",
            Style::Yellow => "\x1b[33m",
            Style::Cyan => "\x1b[36m",
        }
    }

    /// The style of an attempt status.
    pub fn for_status(status: &str) -> Style {
        match status {
            "succeeded" | "passed" | "merged" => Style::Green,
            "failed" => Style::Red,
            "invalidated" => Style::Yellow,
            "running" | "created" | "open" => Style::Cyan,
            _ => Style::Plain,
        }
    }
}

/// Paints `text` (already escaped) when colour is on.
pub fn paint(colour: bool, style: Style, text: &str) -> String {
    if !colour || style == Style::Plain || text.is_empty() {
        text.to_string()
    } else {
        format!("{}{text}\x1b[0m", style.code())
    }
}

/// Makes server data safe to print: control characters become escapes.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A word of a command line to print for a POSIX shell (the `more:` hints):
/// as is when it holds only characters no shell treats specially, else in
/// single quotes (a `'` as `'\''`). Control characters are escaped first, as
/// [`clean`] does, so that the hint cannot move the cursor.
pub fn shell_word(s: &str) -> String {
    let s = clean(s);
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A JSON value as one cell: strings bare, null as `-`, the rest compact JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => clean(s),
        other => clean(&other.to_string()),
    }
}

/// A typed value as a table cell, the way [`cell`] shows its JSON.
pub fn show<T: serde::Serialize + ?Sized>(v: &T) -> String {
    cell(&serde_json::to_value(v).unwrap_or(Value::Null))
}

/// A byte count for people: `1536 bytes, 1.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{n} bytes, {v:.1} {unit}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// An aligned table; cells are escaped text with an optional style.
pub struct Table {
    headers: Vec<&'static str>,
    align: Vec<Align>,
    rows: Vec<Vec<(String, Style)>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            align: vec![Align::Left; headers.len()],
            rows: Vec::new(),
        }
    }

    pub fn right(mut self, column: usize) -> Table {
        self.align[column] = Align::Right;
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.styled_row(cells.into_iter().map(|c| (c, Style::Plain)).collect());
    }

    pub fn styled_row(&mut self, cells: Vec<(String, Style)>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Lines joined by `\n`, with a final newline; the last column is not padded.
    pub fn render(&self, colour: bool) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.width()).collect();
        for r in &self.rows {
            for (i, (c, _)) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.width());
            }
        }
        let mut out = String::new();
        let mut line = |cells: Vec<(&str, Style)>| {
            for (i, (text, style)) in cells.into_iter().enumerate() {
                let pad = widths[i] - text.width();
                let last = i + 1 == n;
                if self.align[i] == Align::Right {
                    out.push_str(&" ".repeat(pad));
                }
                out.push_str(&paint(colour, style, text));
                if !last {
                    if self.align[i] == Align::Left {
                        out.push_str(&" ".repeat(pad));
                    }
                    out.push_str("  ");
                }
            }
            out.push('\n');
        };
        line(self.headers.iter().map(|h| (*h, Style::Bold)).collect());
        for r in &self.rows {
            line(r.iter().map(|(c, s)| (c.as_str(), *s)).collect());
        }
        out
    }
}

/// Stdout, with the colour decision made once.
pub struct Out {
    pub colour: bool,
    w: std::io::Stdout,
}

impl Default for Out {
    fn default() -> Self {
        Out::new()
    }
}

impl Out {
    pub fn new() -> Out {
        let w = std::io::stdout();
        Out {
            colour: colour_wanted(w.is_terminal()),
            w,
        }
    }

    /// Writes text as is (a closed pipe ends the program quietly).
    pub fn text(&mut self, s: &str) -> Result<(), CtlError> {
        self.bytes(s.as_bytes())
    }

    /// Writes bytes as is, e.g. an artifact's content.
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), CtlError> {
        let mut w = self.w.lock();
        w.write_all(b)
            .and_then(|_| w.flush())
            .map_err(CtlError::stdout)
    }

    pub fn is_terminal(&self) -> bool {
        self.w.is_terminal()
    }

    /// A line of text.
    pub fn line(&mut self, s: &str) -> Result<(), CtlError> {
        self.text(&format!("{s}\n"))
    }

    /// The server's JSON exactly as received, ending with a newline.
    pub fn raw(&mut self, json: &str) -> Result<(), CtlError> {
        if json.ends_with('\n') {
            self.text(json)
        } else {
            self.text(&format!("{json}\n"))
        }
    }

    pub fn table(&mut self, t: &Table) -> Result<(), CtlError> {
        self.text(&t.render(self.colour))
    }

    pub fn paint(&self, style: Style, text: &str) -> String {
        paint(self.colour, style, text)
    }

    /// A section heading followed by a table, or `none` when it is empty.
    pub fn section(&mut self, title: &str, t: &Table, none: &str) -> Result<(), CtlError> {
        let title = self.paint(Style::Bold, title);
        self.line(&format!("\n{title}"))?;
        if t.is_empty() {
            self.line(&self.paint(Style::Dim, none))
        } else {
            self.table(t)
        }
    }

    /// `key  value` lines with the keys aligned.
    pub fn fields(&mut self, rows: &[(String, String)]) -> Result<(), CtlError> {
        let w = rows.iter().map(|(k, _)| k.width()).max().unwrap_or(0);
        let mut s = String::new();
        for (k, v) in rows {
            let pad = " ".repeat(w - k.width());
            s.push_str(&format!("{}{pad}  {v}\n", self.paint(Style::Bold, k)));
        }
        self.text(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_by_display_width() {
        let mut t = Table::new(&["A", "COUNT", "C"]).right(1);
        t.row(vec!["é😀".into(), "1".into(), "x".into()]);
        t.row(vec!["abcd".into(), "100".into(), "y".into()]);
        assert_eq!(
            t.render(false),
            "A     COUNT  C\né😀       1  x\nabcd    100  y\n"
        );
        assert!(t.render(true).contains("\x1b[1mA\x1b[0m"));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\x1b[31mb\nc"), "a\\u{1b}[31mb\\nc");
        assert_eq!(cell(&serde_json::json!("x\ty")), "x\\ty");
        assert_eq!(cell(&Value::Null), "-");
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("bench"), "bench");
        assert_eq!(shell_word("a-1_b.c:d=e@f%g+h,i/j"), "a-1_b.c:d=e@f%g+h,i/j");
        assert_eq!(shell_word("two words"), "'two words'");
        assert_eq!(shell_word("it's $HOME"), "'it'\\''s $HOME'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a\nb"), "'a\\nb'");
    }

    #[test]
    fn byte_counts() {
        assert_eq!(bytes(5), "5 bytes");
        assert_eq!(bytes(1536), "1536 bytes, 1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3145728 bytes, 3.0 MiB");
    }
}
