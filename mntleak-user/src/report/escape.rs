//! Untrusted strings (paths, comm, fstype) on a terminal: control characters, ANSI escapes and
//! bidirectional overrides are shown as escapes, so a hostile name cannot rewrite the screen.

use std::borrow::Cow;
use std::fmt::Write;

fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        // Bidi embeddings, overrides and isolates reorder the rest of the line.
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
        || c == '\u{200e}'
        || c == '\u{200f}'
}

/// Escapes control characters (`\x1b` becomes the four characters `\x1b`), C1 controls, bidi
/// controls and backslashes; anything else is returned as is.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_char(&mut out, c, false);
    }
    Cow::Owned(out)
}

/// A double-quoted, escaped string (quotes inside are escaped too), as strace shows arguments.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_char(&mut out, c, true);
    }
    out.push('"');
    out
}

fn push_char(out: &mut String, c: char, in_quotes: bool) {
    match c {
        '\\' => out.push_str("\\\\"),
        '"' if in_quotes => out.push_str("\\\""),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        c if needs_escape(c) => {
            let v = u32::from(c);
            if v < 0x100 {
                let _ = write!(out, "\\x{v:02x}");
            } else {
                let _ = write!(out, "\\u{{{v:04x}}}");
            }
        }
        c => out.push(c),
    }
}
