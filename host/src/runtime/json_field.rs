//! One field of a JSON document, found by RFC 6901 pointer without parsing the
//! whole document.
//!
//! The runtime reads the key (`key_by.field`) and the event time
//! (`event_time.field`) of every event from its JSON value, millions of times a
//! second, so this module scans the bytes just far enough to reach the
//! addressed value and returns a slice of the input.
//!
//! It owns: parsing pointers, the scanner (which validates everything it walks
//! over, so a malformed document on the path is an error, not a wrong answer),
//! and turning the raw value into an `i64` timestamp or key bytes.
//!
//! It must never: build a DOM, allocate during a lookup (keys with escapes are
//! compared while decoding, in place), recurse on input nesting (a hostile
//! document must not overflow the stack), or panic on any input.

use std::borrow::Cow;
use std::fmt;

use thiserror::Error;

/// Deepest nesting skipped inside a value; serde_json stops at the same depth.
const MAX_DEPTH: u32 = 128;

/// A pointer that cannot be parsed; the message says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum PointerError {
    #[error("JSON pointer {pointer:?} must start with '/' (or be \"\" for the whole document)")]
    MissingLeadingSlash { pointer: String },
    #[error(
        "JSON pointer {pointer:?} has an invalid escape '{escape}' at byte {offset}: \
         '~' must be followed by '0' or '1'"
    )]
    InvalidEscape {
        pointer: String,
        escape: String,
        offset: usize,
    },
}

/// The document is not well-formed JSON where the lookup scanned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("malformed JSON at byte {offset}: {reason}")]
pub(crate) struct JsonError {
    reason: &'static str,
    offset: usize,
}

#[cfg(test)]
impl JsonError {
    pub(crate) fn reason(&self) -> &'static str {
        self.reason
    }

    pub(crate) fn offset(&self) -> usize {
        self.offset
    }
}

/// One reference token, pre-decoded so a lookup only compares bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    /// The member name, with `~0` / `~1` already replaced.
    name: Box<[u8]>,
    /// The array index this token denotes, if it is one (RFC 6901: `0` or no
    /// leading zero; `-` is past the end, so never present).
    index: Option<usize>,
}

/// A parsed RFC 6901 JSON pointer such as `/user_id` or `/a~1b/0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonPointer {
    text: Box<str>,
    tokens: Box<[Token]>,
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl JsonPointer {
    /// Parses pointer text: `""` is the whole document, anything else must
    /// start with `/`, and `~` must be followed by `0` (`~`) or `1` (`/`).
    pub(crate) fn parse(text: &str) -> Result<JsonPointer, PointerError> {
        let Some(rest) = text.strip_prefix('/') else {
            if text.is_empty() {
                return Ok(JsonPointer {
                    text: "".into(),
                    tokens: Box::new([]),
                });
            }
            return Err(PointerError::MissingLeadingSlash {
                pointer: text.to_owned(),
            });
        };
        let mut tokens = Vec::new();
        let mut offset = 1;
        for raw in rest.split('/') {
            let mut name = Vec::with_capacity(raw.len());
            let mut chars = raw.char_indices();
            while let Some((i, c)) = chars.next() {
                if c != '~' {
                    let mut buf = [0u8; 4];
                    name.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    continue;
                }
                match chars.next() {
                    Some((_, '0')) => name.push(b'~'),
                    Some((_, '1')) => name.push(b'/'),
                    other => {
                        return Err(PointerError::InvalidEscape {
                            pointer: text.to_owned(),
                            escape: other.map_or("~".to_owned(), |(_, c)| format!("~{c}")),
                            offset: offset + i,
                        });
                    }
                }
            }
            tokens.push(Token {
                index: parse_index(raw.as_bytes()),
                name: name.into_boxed_slice(),
            });
            offset += raw.len() + 1;
        }
        Ok(JsonPointer {
            text: text.into(),
            tokens: tokens.into_boxed_slice(),
        })
    }

    /// The raw bytes of the addressed value (`91033`, `"abc"` with its
    /// quotes, `{...}`), without surrounding whitespace; `Ok(None)` if the path
    /// does not exist (missing member, index out of range, or a token that
    /// goes through a scalar, or a non-index token on an array).
    ///
    /// Only the path is validated: members before the match and the value
    /// itself are checked, members after it are not. If a member name occurs
    /// twice the first one wins (serde_json would keep the last; RFC 8259
    /// leaves it undefined, and scanning on would cost every lookup).
    pub(crate) fn lookup<'a>(&self, json: &'a [u8]) -> Result<Option<&'a [u8]>, JsonError> {
        let mut s = Scanner { buf: json, pos: 0 };
        s.skip_ws();
        // The closer that must follow the value once found (none at top level):
        // checking it catches a document truncated inside the value itself.
        let mut closer = None;
        for token in self.tokens.iter() {
            match s.peek() {
                Some(b'{') => {
                    if !s.find_member(&token.name)? {
                        return Ok(None);
                    }
                    closer = Some(b'}');
                }
                Some(b'[') => {
                    let Some(index) = token.index else {
                        return Ok(None);
                    };
                    if !s.find_element(index)? {
                        return Ok(None);
                    }
                    closer = Some(b']');
                }
                Some(b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => return Ok(None),
                Some(_) => return Err(s.err("expected a JSON value")),
                None => return Err(s.err("unexpected end of input")),
            }
        }
        let start = s.pos;
        s.skip_value()?;
        let end = s.pos;
        if let Some(closer) = closer {
            s.skip_ws();
            match s.peek() {
                Some(b',') => {}
                Some(b) if b == closer => {}
                None => return Err(s.err("unexpected end of input")),
                Some(_) if closer == b'}' => return Err(s.err("expected ',' or '}'")),
                Some(_) => return Err(s.err("expected ',' or ']'")),
            }
        }
        Ok(Some(&json[start..end]))
    }
}

/// An RFC 6901 array index: `0` or a decimal without leading zero.
fn parse_index(token: &[u8]) -> Option<usize> {
    match token {
        [] => None,
        [b'0'] => Some(0),
        [b'0', ..] => None,
        _ if token.iter().all(u8::is_ascii_digit) => std::str::from_utf8(token).ok()?.parse().ok(),
        _ => None,
    }
}

/// A JSON integer (`1700000000000`, `-5`) or a string holding exactly one
/// (`"1700000000000"`), as an `i64`. Floats, exponents, leading zeros, signs
/// other than a leading `-`, escapes and overflow give `None`.
pub(crate) fn parse_i64(raw: &[u8]) -> Option<i64> {
    let digits = match raw {
        [b'"', inner @ .., b'"'] => inner,
        _ => raw,
    };
    let (negative, digits) = match digits {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    let mut value: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(b - b'0');
        // Accumulate towards the sign so that i64::MIN is reachable.
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

/// The bytes a raw value contributes as a key: a string's unescaped content
/// (so `"abc"` keys as `abc`, and `"\u0061bc"` does too), anything else as
/// written (so `1` and `1.0` are different keys). Borrows unless the string
/// has escapes. A string whose escapes cannot be decoded (a lone surrogate)
/// keys as its raw bytes.
pub(crate) fn key_bytes(raw: &[u8]) -> Cow<'_, [u8]> {
    let [b'"', inner @ .., b'"'] = raw else {
        return Cow::Borrowed(raw);
    };
    if !inner.contains(&b'\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = Vec::with_capacity(inner.len());
    match for_each_unescaped(inner, |chunk| {
        out.extend_from_slice(chunk);
        true
    }) {
        Ok(_) => Cow::Owned(out),
        Err(_) => Cow::Borrowed(raw),
    }
}

/// Feeds the decoded content of a string body (between the quotes, already
/// validated by the scanner) to `f` in chunks; `f` returns `false` to stop.
/// Returns whether it ran to the end, or why the escapes cannot be decoded.
fn for_each_unescaped(body: &[u8], mut f: impl FnMut(&[u8]) -> bool) -> Result<bool, &'static str> {
    let mut run_start = 0;
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'\\' {
            i += 1;
            continue;
        }
        if run_start < i && !f(&body[run_start..i]) {
            return Ok(false);
        }
        let mut utf8 = [0u8; 4];
        let decoded: &[u8] = match body.get(i + 1) {
            Some(b'"') => b"\"",
            Some(b'\\') => b"\\",
            Some(b'/') => b"/",
            Some(b'b') => b"\x08",
            Some(b'f') => b"\x0c",
            Some(b'n') => b"\n",
            Some(b'r') => b"\r",
            Some(b't') => b"\t",
            Some(b'u') => {
                let high = hex4(body, i + 2).ok_or("invalid \\u escape")?;
                let code = match high {
                    0xD800..=0xDBFF => {
                        let low = match body.get(i + 6..i + 8) {
                            Some(b"\\u") => hex4(body, i + 8).ok_or("invalid \\u escape")?,
                            _ => return Err("lone surrogate in \\u escape"),
                        };
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err("lone surrogate in \\u escape");
                        }
                        i += 6;
                        0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err("lone surrogate in \\u escape"),
                    _ => high,
                };
                i += 4;
                let c = char::from_u32(code).ok_or("invalid \\u escape")?;
                c.encode_utf8(&mut utf8).as_bytes()
            }
            _ => return Err("invalid escape"),
        };
        if !f(decoded) {
            return Ok(false);
        }
        i += 2;
        run_start = i;
    }
    Ok(run_start >= body.len() || f(&body[run_start..]))
}

/// The index of the first `"`, `\\` or control character at or after `i`
/// (or `buf.len()`), and the OR of the bytes before it, whose high bit says
/// whether UTF-8 needs checking. Tests 8 bytes at a time (SWAR), so long
/// string values are skipped quickly.
#[inline]
fn scan_plain(buf: &[u8], mut i: usize) -> (usize, u8) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `v` is zero iff its lane in the result is set ("haszero").
    let zero_lanes = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut seen = 0u64;
    while let Some(chunk) = buf.get(i..).and_then(|rest| rest.first_chunk::<8>()) {
        let x = u64::from_le_bytes(*chunk);
        let quote = zero_lanes(x ^ (ONES * u64::from(b'"')));
        let backslash = zero_lanes(x ^ (ONES * u64::from(b'\\')));
        // Set if some byte is below 0x20 (possibly also for a byte above
        // one, which only sends us to the exact loop below).
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        if quote | backslash | control != 0 {
            break;
        }
        seen |= x;
        i += 8;
    }
    let mut high = if seen & HIGHS != 0 { 0x80 } else { 0 };
    while let Some(&b) = buf.get(i) {
        if matches!(b, b'"' | b'\\' | 0..=0x1f) {
            break;
        }
        high |= b;
        i += 1;
    }
    (i, high)
}

fn hex4(body: &[u8], at: usize) -> Option<u32> {
    let digits = body.get(at..at + 4)?;
    digits.iter().try_fold(0u32, |acc, &b| {
        let v = (b as char).to_digit(16)?;
        Some(acc << 4 | v)
    })
}

/// A cursor over the input; every method leaves `pos` just after what it read.
struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn err(&self, reason: &'static str) -> JsonError {
        JsonError {
            reason,
            offset: self.pos,
        }
    }

    fn eof(&self) -> JsonError {
        self.err("unexpected end of input")
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// At `{`: finds the member named `name` and stops at its value (after
    /// whitespace). Returns `false`, past the `}`, if there is none.
    fn find_member(&mut self, name: &[u8]) -> Result<bool, JsonError> {
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(false);
        }
        loop {
            let matched = self.key_matches(name)?;
            self.skip_colon()?;
            if matched {
                return Ok(true);
            }
            self.skip_member_value()?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(false);
                }
                Some(_) => return Err(self.err("expected ',' or '}'")),
                None => return Err(self.eof()),
            }
        }
    }

    /// At `[`: finds element `index` and stops at it. Returns `false`, past
    /// the `]`, if the array is shorter.
    fn find_element(&mut self, index: usize) -> Result<bool, JsonError> {
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(false);
        }
        let mut i = 0;
        loop {
            if i == index {
                return Ok(true);
            }
            self.skip_member_value()?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                    i += 1;
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(false);
                }
                Some(_) => return Err(self.err("expected ',' or ']'")),
                None => return Err(self.eof()),
            }
        }
    }

    /// Reads the member name at `pos` and compares it with `name`.
    fn key_matches(&mut self, name: &[u8]) -> Result<bool, JsonError> {
        match self.peek() {
            Some(b'"') => {}
            Some(_) => return Err(self.err("expected a string key")),
            None => return Err(self.eof()),
        }
        let start = self.pos;
        // Fast path: no escape before the closing quote, so the raw bytes are the name.
        let body_start = start + 1;
        let (stop, high_bits) = scan_plain(self.buf, body_start);
        if self.buf.get(stop) == Some(&b'"') {
            let body = &self.buf[body_start..stop];
            if high_bits < 0x80 || std::str::from_utf8(body).is_ok() {
                self.pos = stop + 1;
                return Ok(body == name);
            }
        }
        // An escape, or an error that skip_string reports.
        self.skip_string()?;
        let body = &self.buf[body_start..self.pos - 1];
        // Decode while comparing, so even escaped keys cost no allocation.
        let mut rest = name;
        let complete = for_each_unescaped(body, |chunk| match rest.strip_prefix(chunk) {
            Some(tail) => {
                rest = tail;
                true
            }
            None => false,
        })
        .map_err(|reason| JsonError {
            reason,
            offset: start,
        })?;
        Ok(complete && rest.is_empty())
    }

    /// Skips whitespace, a `:` and whitespace after a member name.
    fn skip_colon(&mut self) -> Result<(), JsonError> {
        self.skip_ws();
        match self.peek() {
            Some(b':') => {
                self.pos += 1;
                self.skip_ws();
                Ok(())
            }
            Some(_) => Err(self.err("expected ':' after an object key")),
            None => Err(self.eof()),
        }
    }

    /// At `"`: skips a string, validating escapes, control characters and UTF-8.
    fn skip_string(&mut self) -> Result<(), JsonError> {
        let body_start = self.pos + 1;
        let mut i = body_start;
        let mut high_bits = 0u8;
        loop {
            let (stop, high) = scan_plain(self.buf, i);
            high_bits |= high;
            i = stop;
            let Some(&b) = self.buf.get(i) else {
                self.pos = i;
                return Err(self.err("unterminated string"));
            };
            match b {
                b'"' => break,
                b'\\' => {
                    let valid = match self.buf.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 2,
                        Some(b'u') if hex4(self.buf, i + 2).is_some() => 6,
                        Some(_) => 0,
                        None => {
                            self.pos = i + 1;
                            return Err(self.err("unterminated string"));
                        }
                    };
                    if valid == 0 {
                        self.pos = i;
                        return Err(self.err("invalid escape in string"));
                    }
                    i += valid;
                }
                _ => {
                    self.pos = i;
                    return Err(self.err("control character in string"));
                }
            }
        }
        if high_bits >= 0x80 && std::str::from_utf8(&self.buf[body_start..i]).is_err() {
            self.pos = body_start;
            return Err(self.err("invalid UTF-8 in string"));
        }
        self.pos = i + 1;
        Ok(())
    }

    /// Skips a number, checking the JSON grammar
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn skip_number(&mut self) -> Result<(), JsonError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(self.err("invalid number"));
            }
            self.skip_digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(self.err("invalid number"));
            }
            self.skip_digits();
        }
        Ok(())
    }

    #[inline]
    fn skip_digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    fn skip_literal(&mut self, literal: &'static [u8]) -> Result<(), JsonError> {
        if self.buf[self.pos..].starts_with(literal) {
            self.pos += literal.len();
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    /// Skips one complete value at `pos` (whitespace before it already
    /// skipped). Iterative, with one bit of stack per nesting level
    /// (1 = object), so deep input costs no call stack.
    fn skip_value(&mut self) -> Result<(), JsonError> {
        let mut stack: u128 = 0;
        let mut depth: u32 = 0;
        loop {
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    self.pos += 1;
                    self.skip_ws();
                    let is_object = open == b'{';
                    if self.peek() == Some(if is_object { b'}' } else { b']' }) {
                        self.pos += 1;
                    } else {
                        if depth == MAX_DEPTH {
                            return Err(self.err("nesting too deep"));
                        }
                        stack = stack << 1 | u128::from(is_object);
                        depth += 1;
                        if is_object {
                            self.skip_key()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => self.skip_string()?,
                Some(b't') => self.skip_literal(b"true")?,
                Some(b'f') => self.skip_literal(b"false")?,
                Some(b'n') => self.skip_literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.skip_number()?,
                Some(_) => return Err(self.err("expected a JSON value")),
                None => return Err(self.eof()),
            }
            // A value ended: close containers until one continues with ','.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                self.skip_ws();
                let in_object = stack & 1 == 1;
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.skip_ws();
                        if in_object {
                            self.skip_key()?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {}
                    Some(b']') if !in_object => {}
                    Some(_) if in_object => return Err(self.err("expected ',' or '}'")),
                    Some(_) => return Err(self.err("expected ',' or ']'")),
                    None => return Err(self.eof()),
                }
                self.pos += 1;
                stack >>= 1;
                depth -= 1;
            }
        }
    }

    /// Skips a value beside the path: scalars directly (the common case in
    /// flat events), containers through `skip_value`.
    #[inline]
    fn skip_member_value(&mut self) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.skip_number(),
            Some(b'"') => self.skip_string(),
            _ => self.skip_value(),
        }
    }

    /// Skips a member name and its `:` inside a skipped object.
    fn skip_key(&mut self) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'"') => self.skip_string()?,
            Some(_) => return Err(self.err("expected a string key")),
            None => return Err(self.eof()),
        }
        self.skip_colon()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn ptr(text: &str) -> JsonPointer {
        JsonPointer::parse(text).unwrap()
    }

    fn find<'a>(pointer: &str, json: &'a str) -> Option<&'a str> {
        ptr(pointer)
            .lookup(json.as_bytes())
            .unwrap()
            .map(|raw| std::str::from_utf8(raw).unwrap())
    }

    fn error(pointer: &str, json: &str) -> JsonError {
        match ptr(pointer).lookup(json.as_bytes()) {
            Err(e) => e,
            Ok(found) => panic!("{json:?} at {pointer:?} gave {found:?}, expected an error"),
        }
    }

    const EVENT: &str = r#"{"user_id":91033,"amount_cents":50767,"ts":1700000000000}"#;

    #[test]
    fn parses_pointers_with_escapes() {
        assert_eq!(ptr("/a~1b/m~0n").tokens[0].name.as_ref(), b"a/b");
        assert_eq!(ptr("/a~1b/m~0n").tokens[1].name.as_ref(), b"m~n");
        assert_eq!(ptr("/~01").tokens[0].name.as_ref(), b"~1");
        assert_eq!(ptr("/").tokens.len(), 1);
        assert_eq!(ptr("/").tokens[0].name.as_ref(), b"");
        assert_eq!(ptr("").tokens.len(), 0);
        assert_eq!(ptr("/a/b").to_string(), "/a/b");
    }

    #[test]
    fn rejects_pointers_without_a_leading_slash() {
        let err = JsonPointer::parse("user_id").unwrap_err();
        assert!(err.to_string().contains("must start with '/'"), "{err}");
    }

    #[test]
    fn rejects_pointers_with_invalid_escapes() {
        let err = JsonPointer::parse("/a~2").unwrap_err();
        assert!(err.to_string().contains("invalid escape '~2'"), "{err}");
        assert!(err.to_string().contains("at byte 2"), "{err}");
        let err = JsonPointer::parse("/a/b~").unwrap_err();
        assert!(err.to_string().contains("invalid escape '~'"), "{err}");
    }

    #[test]
    fn only_canonical_decimal_tokens_are_array_indices() {
        assert_eq!(parse_index(b"0"), Some(0));
        assert_eq!(parse_index(b"17"), Some(17));
        assert_eq!(parse_index(b"01"), None);
        assert_eq!(parse_index(b"-"), None);
        assert_eq!(parse_index(b"+1"), None);
        assert_eq!(parse_index(b""), None);
        assert_eq!(parse_index(b"99999999999999999999999"), None);
    }

    #[test]
    fn finds_top_level_fields_of_an_event() {
        assert_eq!(find("/user_id", EVENT), Some("91033"));
        assert_eq!(find("/amount_cents", EVENT), Some("50767"));
        assert_eq!(find("/ts", EVENT), Some("1700000000000"));
        assert_eq!(find("/missing", EVENT), None);
    }

    #[test]
    fn empty_pointer_is_the_whole_document_without_whitespace() {
        assert_eq!(find("", "  {\"a\": 1}\n"), Some("{\"a\": 1}"));
        assert_eq!(find("", "42"), Some("42"));
    }

    #[test]
    fn returns_strings_with_their_quotes_and_containers_whole() {
        let doc = r#"{"s":"a\"b","o":{"x":[1,2]},"a":[{"y":null}]}"#;
        assert_eq!(find("/s", doc), Some(r#""a\"b""#));
        assert_eq!(find("/o", doc), Some(r#"{"x":[1,2]}"#));
        assert_eq!(find("/a", doc), Some(r#"[{"y":null}]"#));
    }

    #[test]
    fn follows_nested_paths_through_objects_and_arrays() {
        let doc = r#"{"a":{"b":[10,{"c":"deep"},[30,31]]}}"#;
        assert_eq!(find("/a/b/0", doc), Some("10"));
        assert_eq!(find("/a/b/1/c", doc), Some(r#""deep""#));
        assert_eq!(find("/a/b/2/1", doc), Some("31"));
        assert_eq!(find("/a/b/3", doc), None);
        assert_eq!(find("/a/b/-", doc), None);
        assert_eq!(find("/a/b/01", doc), None);
        assert_eq!(find("/a/b/x", doc), None);
        assert_eq!(find("/a/b/0/z", doc), None);
        assert_eq!(find("/a/c", doc), None);
    }

    #[test]
    fn numeric_tokens_name_members_of_objects() {
        assert_eq!(find("/0", r#"{"1":"one","0":"zero"}"#), Some(r#""zero""#));
        assert_eq!(find("/01", r#"{"01":true}"#), Some("true"));
    }

    #[test]
    fn skips_nested_objects_before_the_field() {
        let doc = r#"{"meta":{"a":{"b":[1,{"c":"}"}]},"d":"]"},"ts":5}"#;
        assert_eq!(find("/ts", doc), Some("5"));
    }

    #[test]
    fn skips_every_kind_of_value_before_the_field() {
        let doc = r#"{"s":"x\\\"\u00e9\n","n":-1.5e-3,"z":0,"t":true,"f":false,"u":null,
                      "e":{},"ea":[],"arr":[1,"two",[3],{"four":4}],"ts":7}"#;
        assert_eq!(find("/ts", doc), Some("7"));
    }

    #[test]
    fn tolerates_whitespace_everywhere() {
        let doc = " \n{ \"a\" :\t[ 1 , { \"b\" : \"v\" } ] ,\r\n \"c\" : 3 } ";
        assert_eq!(find("/a/1/b", doc), Some(r#""v""#));
        assert_eq!(find("/c", doc), Some("3"));
        assert_eq!(find("/a/1", doc), Some(r#"{ "b" : "v" }"#));
    }

    #[test]
    fn matches_object_keys_written_with_escapes() {
        let doc = r#"{"us\u0065r_id":1,"a\"b":2,"c\/d":3,"\u00e9":4,"\ud83d\ude00":5,"t\tab":6}"#;
        assert_eq!(find("/user_id", doc), Some("1"));
        assert_eq!(find("/a\"b", doc), Some("2"));
        assert_eq!(find("/c~1d", doc), Some("3"));
        assert_eq!(find("/é", doc), Some("4"));
        assert_eq!(find("/😀", doc), Some("5"));
        assert_eq!(find("/t\tab", doc), Some("6"));
        assert_eq!(find("/user", doc), None);
        assert_eq!(find("/user_idx", doc), None);
    }

    #[test]
    fn escaped_keys_that_only_share_a_prefix_do_not_match() {
        let doc = r#"{"ab\u0063d":1,"a":2}"#;
        assert_eq!(find("/abc", doc), None);
        assert_eq!(find("/abcde", doc), None);
        assert_eq!(find("/a", doc), Some("2"));
    }

    #[test]
    fn non_ascii_keys_match_without_escapes() {
        assert_eq!(
            find("/ключ", r#"{"ключ":"значение"}"#),
            Some(r#""значение""#)
        );
    }

    #[test]
    fn first_of_duplicate_members_wins() {
        assert_eq!(find("/a", r#"{"a":1,"a":2}"#), Some("1"));
    }

    #[test]
    fn paths_through_scalars_are_absent() {
        assert_eq!(find("/a", "5"), None);
        assert_eq!(find("/a", r#""str""#), None);
        assert_eq!(find("/a", "null"), None);
        assert_eq!(find("/0", r#"{"a":1}"#), None);
        assert_eq!(find("/a", "[1]"), None);
        assert_eq!(find("/0", "[]"), None);
        assert_eq!(find("/a", "{}"), None);
    }

    #[test]
    fn reports_an_unterminated_string() {
        let e = error("/b", r#"{"a":"never ends"#);
        assert_eq!(e.reason(), "unterminated string");
        assert_eq!(e.offset(), 16);
        assert_eq!(error("/b", r#"{"a":"x\"#).reason(), "unterminated string");
        assert_eq!(error("/b", r#"{"a"#).reason(), "unterminated string");
    }

    #[test]
    fn reports_a_truncated_object() {
        let e = error("/b", r#"{"a":1"#);
        assert_eq!(e.reason(), "unexpected end of input");
        assert_eq!(e.offset(), 6);
        assert_eq!(error("/b", r#"{"a":"#).reason(), "unexpected end of input");
        assert_eq!(
            error("/b", r#"{"a":{"x":[1,2"#).reason(),
            "unexpected end of input"
        );
        assert_eq!(error("/b", "{").reason(), "unexpected end of input");
        assert_eq!(error("/b", "").reason(), "unexpected end of input");
        assert_eq!(error("", "  ").reason(), "unexpected end of input");
    }

    #[test]
    fn reports_a_value_truncated_at_the_end_of_input() {
        // "17" would otherwise pass for a complete timestamp.
        assert_eq!(
            error("/ts", r#"{"ts":17"#).reason(),
            "unexpected end of input"
        );
        assert_eq!(error("/0", "[1").reason(), "unexpected end of input");
    }

    #[test]
    fn reports_structural_errors_with_their_offsets() {
        let e = error("/b", r#"{"a" 1}"#);
        assert_eq!(
            (e.reason(), e.offset()),
            ("expected ':' after an object key", 5)
        );
        assert_eq!(error("/b", r#"{"a":1,}"#).reason(), "expected a string key");
        assert_eq!(
            error("/b", r#"{"a":1 "b":2}"#).reason(),
            "expected ',' or '}'"
        );
        assert_eq!(error("/b", r#"{a:1}"#).reason(), "expected a string key");
        assert_eq!(error("/1", "[1 2]").reason(), "expected ',' or ']'");
        assert_eq!(error("/2", "[1,,2]").reason(), "expected a JSON value");
        assert_eq!(
            error("/b", r#"{"a":[1,2}}"#).reason(),
            "expected ',' or ']'"
        );
        assert_eq!(
            error("/b", r#"{"a":{"x":1]}"#).reason(),
            "expected ',' or '}'"
        );
        assert_eq!(error("/a", r#"{"a":1 x}"#).reason(), "expected ',' or '}'");
        assert_eq!(error("/a", "x").reason(), "expected a JSON value");
    }

    #[test]
    fn reports_bad_scalars_on_the_path() {
        assert_eq!(
            error("/b", r#"{"a":tru,"b":1}"#).reason(),
            "invalid literal"
        );
        assert_eq!(
            error("/b", r#"{"a":01,"b":1}"#).reason(),
            "expected ',' or '}'"
        );
        assert_eq!(error("/b", r#"{"a":-,"b":1}"#).reason(), "invalid number");
        assert_eq!(error("/b", r#"{"a":1.,"b":1}"#).reason(), "invalid number");
        assert_eq!(error("/b", r#"{"a":1e,"b":1}"#).reason(), "invalid number");
        assert_eq!(
            error("/b", r#"{"a":+1,"b":1}"#).reason(),
            "expected a JSON value"
        );
        assert_eq!(
            error("/b", "{\"a\":\"\x01\",\"b\":1}").reason(),
            "control character in string"
        );
        assert_eq!(
            error("/b", r#"{"a":"\q","b":1}"#).reason(),
            "invalid escape in string"
        );
        assert_eq!(
            error("/b", r#"{"a":"\u12G4","b":1}"#).reason(),
            "invalid escape in string"
        );
        assert_eq!(error("/a", r#"{"a":nul}"#).reason(), "invalid literal");
    }

    #[test]
    fn reports_invalid_utf8_in_strings() {
        let doc = b"{\"a\":\"\xff\",\"b\":1}";
        let e = ptr("/b").lookup(doc).unwrap_err();
        assert_eq!(e.reason(), "invalid UTF-8 in string");
        let key = b"{\"\xc3\":1}";
        assert_eq!(
            ptr("/b").lookup(key).unwrap_err().reason(),
            "invalid UTF-8 in string"
        );
    }

    #[test]
    fn finds_specials_at_every_position_of_long_strings() {
        // Exercises the 8-byte scan: each special byte at each offset, in a
        // skipped value and in a key, validated against serde_json.
        let specials: [&[u8]; 8] = [
            b"\\\"",
            b"\\\\",
            b"\\u00e9",
            b"\x01",
            b"\x1f",
            "é".as_bytes(),
            b"\xff",
            b"\"",
        ];
        for special in specials {
            for at in 0..20 {
                let mut body = vec![b'x'; 20];
                body.splice(at..at, special.iter().copied());
                let mut doc = b"{\"s\":\"".to_vec();
                doc.extend_from_slice(&body);
                doc.extend_from_slice(b"\",\"");
                doc.extend_from_slice(&body);
                doc.extend_from_slice(b"\":1,\"z\":2}");
                let oracle = serde_json::from_slice::<Value>(&doc).ok();
                let ours = ptr("/z").lookup(&doc);
                match &oracle {
                    Some(v) => assert_eq!(ours, Ok(Some(&b"2"[..])), "{v}"),
                    None => assert!(ours.is_err(), "{:?}", String::from_utf8_lossy(&doc)),
                }
                if let Some(Value::Object(map)) = &oracle {
                    let (name, _) = map
                        .iter()
                        .find(|(k, _)| k.as_str() != "s" && k.as_str() != "z")
                        .unwrap();
                    let found = ptr(&format!("/{}", escape_token(name)))
                        .lookup(&doc)
                        .unwrap();
                    assert_eq!(found, Some(&b"1"[..]), "{name:?}");
                }
            }
        }
    }

    #[test]
    fn reports_lone_surrogates_in_keys_it_compares() {
        let e = error("/b", r#"{"\ud800":1,"b":2}"#);
        assert_eq!(e.reason(), "lone surrogate in \\u escape");
        assert_eq!(e.offset(), 1);
    }

    #[test]
    fn does_not_validate_past_the_found_member() {
        assert_eq!(find("/a", r#"{"a":1, garbage"#), Some("1"));
    }

    #[test]
    fn refuses_hostile_nesting_without_overflowing_the_stack() {
        let deep = format!(
            "{{\"a\":{}1{},\"b\":2}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(error("/b", &deep).reason(), "nesting too deep");
        let ok = format!("{{\"a\":{}1{},\"b\":2}}", "[".repeat(128), "]".repeat(128));
        assert_eq!(find("/b", &ok), Some("2"));
    }

    #[test]
    fn parses_integers_and_strings_holding_integers() {
        assert_eq!(parse_i64(b"1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_i64(b"\"1700000000000\""), Some(1_700_000_000_000));
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-0"), Some(0));
        assert_eq!(parse_i64(b"-42"), Some(-42));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
    }

    #[test]
    fn rejects_floats_overflow_and_non_integers() {
        for raw in [
            &b"1.0"[..],
            b"1e3",
            b"1.0e3",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"007",
            b"+1",
            b"-",
            b"",
            b"\"\"",
            b"\"",
            b"\" 1\"",
            b"\"1.5\"",
            b"true",
            b"null",
            b"{}",
        ] {
            assert_eq!(parse_i64(raw), None, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn key_bytes_unescape_strings_and_keep_other_values_as_written() {
        assert_eq!(key_bytes(b"\"abc\""), Cow::Borrowed(&b"abc"[..]));
        assert!(matches!(key_bytes(b"\"abc\""), Cow::Borrowed(_)));
        assert_eq!(key_bytes(br#""\u0061b\"c""#).as_ref(), b"ab\"c");
        assert_eq!(key_bytes(br#""\ud83d\ude00""#).as_ref(), "😀".as_bytes());
        assert_eq!(key_bytes(b"91033").as_ref(), b"91033");
        assert_eq!(key_bytes(b"1.0").as_ref(), b"1.0");
        assert_eq!(key_bytes(b"{\"a\":1}").as_ref(), b"{\"a\":1}");
        assert_eq!(key_bytes(b"\"\"").as_ref(), b"");
        assert_eq!(key_bytes(br#""\ud800""#).as_ref(), br#""\ud800""#);
    }

    // --- property test against serde_json -------------------------------

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn one_in(&mut self, n: u64) -> bool {
            self.below(n) == 0
        }
    }

    const KEY_PIECES: &[&str] = &[
        "a", "b", "ts", "user_id", "0", "1", "10", "-", "~", "/", "~1", "\"", "\\", "é", "😀", " ",
        "\t", "\u{1}", "",
    ];

    fn gen_key(rng: &mut Rng) -> String {
        (0..rng.below(3))
            .map(|_| KEY_PIECES[rng.below(KEY_PIECES.len() as u64) as usize])
            .collect()
    }

    fn gen_value(rng: &mut Rng, depth: u32) -> Value {
        let pick = if depth >= 4 {
            rng.below(6)
        } else {
            rng.below(9)
        };
        match pick {
            0 => Value::Null,
            1 => Value::Bool(rng.one_in(2)),
            2 => Value::from(rng.next() as i64 >> rng.below(64)),
            3 => Value::from((rng.below(2_000_001) as f64 - 1_000_000.0) / 64.0),
            4 => Value::from(gen_key(rng)),
            5 => Value::from(rng.below(1 << 20)),
            6 | 7 => Value::Object(
                (0..rng.below(6))
                    .map(|_| (gen_key(rng), gen_value(rng, depth + 1)))
                    .collect(),
            ),
            _ => Value::Array(
                (0..rng.below(5))
                    .map(|_| gen_value(rng, depth + 1))
                    .collect(),
            ),
        }
    }

    fn ws(rng: &mut Rng, out: &mut String) {
        if rng.one_in(3) {
            for _ in 0..rng.below(3) {
                out.push([' ', '\t', '\n', '\r'][rng.below(4) as usize]);
            }
        }
    }

    /// Writes a string with randomly chosen (but valid) escapes.
    fn write_string(s: &str, rng: &mut Rng, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' if rng.one_in(2) => out.push_str("\\\""),
                '\\' if rng.one_in(2) => out.push_str("\\\\"),
                '/' if rng.one_in(2) => out.push_str("\\/"),
                '\t' if rng.one_in(2) => out.push_str("\\t"),
                _ if c == '"' || c == '\\' || (c as u32) < 0x20 || rng.one_in(6) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                _ => out.push(c),
            }
        }
        out.push('"');
    }

    fn write_json(v: &Value, rng: &mut Rng, out: &mut String) {
        match v {
            Value::Object(map) => {
                out.push('{');
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    ws(rng, out);
                    write_string(k, rng, out);
                    ws(rng, out);
                    out.push(':');
                    ws(rng, out);
                    write_json(v, rng, out);
                    ws(rng, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    ws(rng, out);
                    write_json(v, rng, out);
                    ws(rng, out);
                }
                out.push(']');
            }
            Value::String(s) => write_string(s, rng, out),
            other => out.push_str(&other.to_string()),
        }
    }

    fn escape_token(token: &str) -> String {
        token.replace('~', "~0").replace('/', "~1")
    }

    fn collect_pointers(v: &Value, prefix: &str, out: &mut Vec<String>) {
        out.push(prefix.to_owned());
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    collect_pointers(v, &format!("{prefix}/{}", escape_token(k)), out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    collect_pointers(v, &format!("{prefix}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn agrees_with_serde_json_pointer_on_generated_documents() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut checked = 0;
        for _ in 0..400 {
            let doc = if rng.one_in(2) {
                Value::Object(
                    (0..1 + rng.below(6))
                        .map(|_| (gen_key(&mut rng), gen_value(&mut rng, 1)))
                        .collect(),
                )
            } else {
                gen_value(&mut rng, 0)
            };
            let mut text = String::new();
            ws(&mut rng, &mut text);
            write_json(&doc, &mut rng, &mut text);
            ws(&mut rng, &mut text);
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), doc, "{text}");

            let mut pointers = Vec::new();
            collect_pointers(&doc, "", &mut pointers);
            let existing = pointers.len();
            for i in 0..existing {
                let p = pointers[i].clone();
                pointers.push(format!("{p}/missing"));
                pointers.push(format!("{p}/0"));
                pointers.push(format!("{p}/7"));
                pointers.push(format!("{p}/-"));
                pointers.push(format!("{p}/00"));
                pointers.push(format!("{p}/{}", escape_token(&gen_key(&mut rng))));
            }
            for p in &pointers {
                let found = JsonPointer::parse(p)
                    .unwrap()
                    .lookup(text.as_bytes())
                    .unwrap_or_else(|e| panic!("{p:?} in {text}: {e}"));
                let ours = found.map(|raw| serde_json::from_slice::<Value>(raw).unwrap());
                assert_eq!(ours.as_ref(), doc.pointer(p), "{p:?} in {text}");
                checked += 1;
            }

            // Every strict prefix either fails or still finds the same complete value.
            for p in pointers.iter().take(existing).skip(1) {
                let pointer = JsonPointer::parse(p).unwrap();
                let whole = pointer.lookup(text.as_bytes()).unwrap();
                let cut = rng.below(text.len() as u64) as usize;
                match pointer.lookup(&text.as_bytes()[..cut]) {
                    Err(_) => {}
                    Ok(found) => assert_eq!(found, whole, "{p:?} in {:?}", &text.as_bytes()[..cut]),
                }
            }
        }
        assert!(checked > 5_000, "only {checked} lookups checked");
    }

    #[test]
    fn key_bytes_of_a_string_match_serde_json_unescaping() {
        let mut rng = Rng(42);
        for _ in 0..500 {
            let s = gen_key(&mut rng) + &gen_key(&mut rng);
            let mut text = String::new();
            write_string(&s, &mut rng, &mut text);
            assert_eq!(key_bytes(text.as_bytes()).as_ref(), s.as_bytes(), "{text}");
        }
    }

    /// Runs `f` `n` times in 20 chunks; returns the fastest chunk in ns per
    /// call (on a shared machine, the one least disturbed by other work).
    fn best_ns(n: u32, mut f: impl FnMut()) -> f64 {
        use std::time::Instant;
        (0..20)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..n / 20 {
                    f();
                }
                start.elapsed().as_nanos() as f64 / f64::from(n / 20)
            })
            .fold(f64::MAX, f64::min)
    }

    #[test]
    #[ignore = "micro-benchmark: cargo test --release -- --ignored --nocapture"]
    fn benchmark_lookup_of_event_fields() {
        use std::hint::black_box;
        const N: u32 = 10_000_000;
        for field in ["/ts", "/user_id"] {
            let pointer = ptr(field);
            let ns = best_ns(N, || {
                let raw = black_box(&pointer).lookup(black_box(EVENT.as_bytes()));
                black_box(parse_i64(raw.unwrap().unwrap()));
            });
            println!("lookup + parse_i64 {field}: {ns:.1} ns");
        }
        let pointer = ptr("/user_id");
        let ns = best_ns(N, || {
            let raw = black_box(&pointer).lookup(black_box(EVENT.as_bytes()));
            black_box(key_bytes(raw.unwrap().unwrap()));
        });
        println!("lookup + key_bytes /user_id: {ns:.1} ns");
        let ns = best_ns(N / 10, || {
            let value: Value = serde_json::from_slice(black_box(EVENT.as_bytes())).unwrap();
            black_box(value.pointer("/ts").and_then(Value::as_i64));
        });
        println!("for scale, serde_json::Value parse + pointer /ts: {ns:.1} ns");
    }
}
