//! JSON decoding for [`crate::Event::json`]: a strict one-pass decoder for
//! the common case, with serde_json as the reference and the fallback.
//!
//! Why: in wasm, serde_json was about 45 % of the W1 plugin's time (its
//! string scanning works a 32-bit word at a time there, and every object key
//! goes through its general string path). The decoder here accepts a subset
//! of what serde_json accepts: strings without escapes, numbers it can read
//! exactly, no enums, byte buffers, `f32` or 128-bit integers, and at most
//! [`MAX_DEPTH`] levels of nesting. For what it accepts it makes exactly the
//! visitor calls serde_json makes (`visit_borrowed_str` for a string,
//! `visit_u64` / `visit_i64` / `visit_f64` as serde_json classifies a
//! number, ...), so a plugin gets the same value either way. Anything else,
//! including every error, is decoded again by serde_json, whose answer,
//! value or error message, is the result.

use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Decodes `bytes` as serde_json would.
pub(crate) fn from_slice<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> serde_json::Result<T> {
    if fast_path_sound() {
        let mut decoder = Decoder::new(bytes);
        if let Ok(value) = T::deserialize(&mut decoder)
            && decoder.at_end()
        {
            return Ok(value);
        }
    }
    serde_json::from_slice(bytes)
}

/// Whether the fast path may run: not if the plugin's build turns on
/// serde_json's `arbitrary_precision`, with which serde_json hands numbers
/// over as text rather than by the visits made here.
fn fast_path_sound() -> bool {
    static SOUND: OnceLock<bool> = OnceLock::new();
    *SOUND.get_or_init(|| {
        // With it, a number keeps its text ("1.50"); without, "1.5".
        let text = serde_json::from_str::<serde_json::Value>("1.50").map(|v| v.to_string());
        matches!(text.as_deref(), Ok("1.5"))
    })
}

/// Nesting deeper than this goes to serde_json (whose limit is 128).
const MAX_DEPTH: u32 = 100;

/// serde_json's name for its raw-value newtype, which only it can decode.
const RAW_VALUE: &str = "$serde_json::private::RawValue";

/// The decoder does not take this input: serde_json decides.
#[derive(Debug)]
struct Bail;

impl fmt::Display for Bail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not on the fast path")
    }
}

impl std::error::Error for Bail {}

impl de::Error for Bail {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Bail
    }
}

type Result<T> = std::result::Result<T, Bail>;

struct Decoder<'de> {
    input: &'de [u8],
    at: usize,
    depth: u32,
}

/// A number scanned by JSON's grammar.
struct NumberToken {
    start: usize,
    /// The integer part's value, without the sign, if it has at most 19
    /// digits.
    value: Option<u64>,
    negative: bool,
    /// With a fraction or an exponent.
    float: bool,
}

impl<'de> Decoder<'de> {
    fn new(input: &'de [u8]) -> Self {
        Decoder {
            input,
            at: 0,
            depth: 0,
        }
    }

    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.input.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    #[inline]
    fn peek(&mut self) -> Result<u8> {
        self.skip_whitespace();
        self.input.get(self.at).copied().ok_or(Bail)
    }

    fn at_end(&mut self) -> bool {
        self.skip_whitespace();
        self.at == self.input.len()
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.input[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// The string at the cursor (on its opening quote), if it has no
    /// escapes and no control characters and is UTF-8.
    #[inline]
    fn string(&mut self) -> Result<&'de str> {
        let start = self.at + 1;
        let mut end = start;
        let mut ascii = true;
        loop {
            match *self.input.get(end).ok_or(Bail)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return Err(Bail),
                byte => ascii &= byte < 0x80,
            }
            end += 1;
        }
        self.at = end + 1;
        let bytes = &self.input[start..end];
        if ascii {
            // SAFETY: every byte is below 0x80, so the bytes are ASCII, which
            // is UTF-8. (`from_utf8` on every key cost as much as the scan.)
            Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
        } else {
            std::str::from_utf8(bytes).map_err(|_| Bail)
        }
    }

    /// Skips digits; returns how many, and their value if there are at most
    /// 19 (which cannot overflow a u64; more are left to serde_json).
    #[inline]
    fn digits(&mut self) -> (usize, u64) {
        let start = self.at;
        let mut value: u64 = 0;
        while let Some(&digit @ b'0'..=b'9') = self.input.get(self.at) {
            // Wrapping, not checked: a checked 64-bit multiply is a 128-bit
            // one on wasm32. Up to 19 digits it cannot wrap.
            value = value.wrapping_mul(10).wrapping_add(u64::from(digit - b'0'));
            self.at += 1;
        }
        (self.at - start, value)
    }

    /// Scans the number at the cursor by JSON's grammar.
    #[inline]
    fn number_token(&mut self) -> Result<NumberToken> {
        let start = self.at;
        let negative = self.input.get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        let (count, value) = match self.input.get(self.at) {
            // One leading zero, and no digit after it.
            Some(b'0') => {
                self.at += 1;
                if let Some(b'0'..=b'9') = self.input.get(self.at) {
                    return Err(Bail);
                }
                (1, 0)
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Bail),
        };
        let mut float = false;
        if self.input.get(self.at) == Some(&b'.') {
            self.at += 1;
            float = true;
            if self.digits().0 == 0 {
                return Err(Bail);
            }
        }
        if let Some(b'e' | b'E') = self.input.get(self.at) {
            self.at += 1;
            float = true;
            if let Some(b'+' | b'-') = self.input.get(self.at) {
                self.at += 1;
            }
            if self.digits().0 == 0 {
                return Err(Bail);
            }
        }
        Ok(NumberToken {
            start,
            value: (count <= 19).then_some(value),
            negative,
            float,
        })
    }

    /// Visits the number at the cursor as serde_json does: a non-negative
    /// integer as `u64`, a negative one as `i64`, a fraction or exponent as
    /// `f64` (read by serde_json itself, so it rounds the same way). What
    /// serde_json turns into a float instead (`-0`, integers out of range)
    /// goes to serde_json.
    fn visit_number<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let token = self.number_token()?;
        if token.float {
            let text = &self.input[token.start..self.at];
            let value: f64 = serde_json::from_slice(text).map_err(|_| Bail)?;
            return visitor.visit_f64(value);
        }
        let value = token.value.ok_or(Bail)?;
        match (token.negative, value) {
            (false, _) => visitor.visit_u64(value),
            (true, 0) => Err(Bail),
            // Down to -2^63, which wraps to itself.
            (true, 1..=0x8000_0000_0000_0000) => visitor.visit_i64((value as i64).wrapping_neg()),
            (true, _) => Err(Bail),
        }
    }

    #[inline]
    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Bail);
        }
        // The opening bracket.
        self.at += 1;
        Ok(())
    }

    /// Consumes the closing `close` of the container being left.
    #[inline]
    fn leave(&mut self, close: u8) -> Result<()> {
        if self.peek()? != close {
            return Err(Bail);
        }
        self.at += 1;
        self.depth -= 1;
        Ok(())
    }

    fn visit_seq<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        self.enter()?;
        let value = visitor.visit_seq(Elements {
            decoder: self,
            first: true,
        })?;
        self.leave(b']')?;
        Ok(value)
    }

    fn visit_map<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        self.enter()?;
        let value = visitor.visit_map(Entries {
            decoder: self,
            first: true,
        })?;
        self.leave(b'}')?;
        Ok(value)
    }

    /// Skips the value at the cursor, checking it as strictly as reading it.
    fn skip(&mut self) -> Result<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'-' | b'0'..=b'9' => self.number_token().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'[' => {
                self.enter()?;
                let mut first = true;
                while self.next_item(&mut first, b']')? {
                    self.skip()?;
                }
                self.leave(b']')
            }
            b'{' => {
                self.enter()?;
                let mut first = true;
                while self.next_item(&mut first, b'}')? {
                    if self.peek()? != b'"' {
                        return Err(Bail);
                    }
                    self.string()?;
                    self.colon()?;
                    self.skip()?;
                }
                self.leave(b'}')
            }
            _ => Err(Bail),
        }
    }

    /// Whether another element or entry follows in the container that
    /// `close` ends (consuming the comma before it); the close itself is
    /// left for `leave`.
    #[inline]
    fn next_item(&mut self, first: &mut bool, close: u8) -> Result<bool> {
        let next = self.peek()?;
        if next == close {
            return Ok(false);
        }
        if !std::mem::take(first) {
            if next != b',' {
                return Err(Bail);
            }
            self.at += 1;
            // A trailing comma, refused before anything reads on (as
            // serde_json does, even for a reader that would read nothing).
            if self.peek()? == close {
                return Err(Bail);
            }
        }
        Ok(true)
    }

    #[inline]
    fn colon(&mut self) -> Result<()> {
        if self.peek()? != b':' {
            return Err(Bail);
        }
        self.at += 1;
        Ok(())
    }
}

/// Deserializer methods that do what `$target` does.
macro_rules! forward {
    ($target:ident: $($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
                self.$target(visitor)
            }
        )*
    };
}

/// Deserializer methods left to serde_json.
macro_rules! bail {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
                Err(Bail)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de> {
    type Error = Bail;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'n' => {
                self.literal(b"null")?;
                visitor.visit_unit()
            }
            b't' => {
                self.literal(b"true")?;
                visitor.visit_bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                visitor.visit_bool(false)
            }
            b'"' => visitor.visit_borrowed_str(self.string()?),
            b'-' | b'0'..=b'9' => self.visit_number(visitor),
            b'[' => self.visit_seq(visitor),
            b'{' => self.visit_map(visitor),
            _ => Err(Bail),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b't' | b'f' => self.deserialize_any(visitor),
            _ => Err(Bail),
        }
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.visit_number(visitor),
            _ => Err(Bail),
        }
    }

    forward! { deserialize_i64: deserialize_i8 deserialize_i16 deserialize_i32 deserialize_u8
    deserialize_u16 deserialize_u32 deserialize_u64 deserialize_f64 }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'"' => visitor.visit_borrowed_str(self.string()?),
            _ => Err(Bail),
        }
    }

    forward! { deserialize_str: deserialize_char deserialize_string deserialize_identifier }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'n' => self.deserialize_any(visitor),
            _ => Err(Bail),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name == RAW_VALUE {
            return Err(Bail);
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'[' => self.visit_seq(visitor),
            _ => Err(Bail),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'{' => self.visit_map(visitor),
            _ => Err(Bail),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.peek()? {
            b'[' => self.visit_seq(visitor),
            b'{' => self.visit_map(visitor),
            _ => Err(Bail),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip()?;
        visitor.visit_unit()
    }

    // serde_json's own ways with these (128-bit integers read whole, `f32`,
    // byte buffers, enum variants) are left to it.

    // (With its `float_roundtrip` feature serde_json reads an `f32` in
    // single precision, not as an `f64` narrowed.)
    bail! { deserialize_i128 deserialize_u128 deserialize_f32 deserialize_bytes deserialize_byte_buf }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value> {
        Err(Bail)
    }
}

/// The elements of an array.
struct Elements<'a, 'de> {
    decoder: &'a mut Decoder<'de>,
    first: bool,
}

impl<'de> SeqAccess<'de> for Elements<'_, 'de> {
    type Error = Bail;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !self.decoder.next_item(&mut self.first, b']')? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.decoder).map(Some)
    }
}

/// The entries of an object.
struct Entries<'a, 'de> {
    decoder: &'a mut Decoder<'de>,
    first: bool,
}

impl<'de> MapAccess<'de> for Entries<'_, 'de> {
    type Error = Bail;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !self.decoder.next_item(&mut self.first, b'}')? {
            return Ok(None);
        }
        if self.decoder.peek()? != b'"' {
            return Err(Bail);
        }
        let key = self.decoder.string()?;
        seed.deserialize(Key(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        self.decoder.colon()?;
        seed.deserialize(&mut *self.decoder)
    }
}

/// An object key. serde_json hands a key to whatever reads it as a string,
/// except that it parses numbers and booleans out of keys read as those,
/// and has its own ways with options, newtypes and enums: those go to it.
struct Key<'de>(&'de str);

impl<'de> de::Deserializer<'de> for Key<'de> {
    type Error = Bail;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.0)
    }

    serde::forward_to_deserialize_any! {
        char str string unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }

    bail! { deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
    deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
    deserialize_u128 deserialize_f32 deserialize_f64 deserialize_bytes deserialize_byte_buf
    deserialize_option }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _visitor: V,
    ) -> Result<V::Value> {
        Err(Bail)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value> {
        Err(Bail)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::fmt::Debug;

    use serde::Deserialize;
    use serde_json::{Value, json};

    use super::*;

    /// Whether the fast path alone takes `doc` as a `T`.
    fn fast<'de, T: Deserialize<'de>>(doc: &'de [u8]) -> bool {
        let mut decoder = Decoder::new(doc);
        T::deserialize(&mut decoder).is_ok() && decoder.at_end()
    }

    /// `from_slice` gives what serde_json gives: the same value, or an
    /// error with the same message.
    fn same<'de, T: Deserialize<'de> + PartialEq + Debug>(doc: &'de [u8]) {
        let ours = from_slice::<T>(doc);
        let theirs = serde_json::from_slice::<T>(doc);
        let text = String::from_utf8_lossy(doc);
        match (ours, theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{text}"),
            (a, b) => panic!("{text}: ours {a:?}, serde_json's {b:?}"),
        }
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Transaction<'a> {
        user_id: u64,
        amount_cents: i64,
        #[serde(default)]
        rate: f64,
        note: Option<String>,
        #[serde(borrow, default)]
        tag: &'a str,
        #[serde(default)]
        flags: Vec<bool>,
        #[serde(default)]
        extra: HashMap<String, i32>,
        #[serde(default)]
        nothing: Option<()>,
        #[serde(default)]
        initial: Option<char>,
        #[serde(default)]
        small: u8,
        #[serde(default)]
        ratio: f32,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        a: u32,
        b: Option<Vec<i16>>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Id(u64);

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "type")]
    enum Tagged {
        Click { x: i32 },
        View { page: String },
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(untagged)]
    enum Untagged {
        Number(i64),
        Text(String),
        Pair(u8, u8),
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Plain {
        A,
        B(u8),
    }

    /// Every target type against one document.
    fn all_types(doc: &[u8]) {
        same::<Value>(doc);
        same::<Transaction>(doc);
        same::<Strict>(doc);
        same::<Id>(doc);
        same::<Tagged>(doc);
        same::<Untagged>(doc);
        same::<Plain>(doc);
        same::<(u8, String)>(doc);
        same::<Vec<i64>>(doc);
        same::<HashMap<String, f64>>(doc);
        same::<BTreeMap<u64, bool>>(doc);
        same::<Option<u32>>(doc);
        same::<i128>(doc);
        same::<f32>(doc);
        same::<char>(doc);
        same::<String>(doc);
        same::<&str>(doc);
        same::<bool>(doc);
        same::<()>(doc);
        same::<serde::de::IgnoredAny>(doc);
    }

    const EDGE_CASES: &[&str] = &[
        "0",
        "-0",
        "01",
        "-01",
        "1.5",
        "-1.5e3",
        "1E+2",
        "1e-2",
        "1.",
        ".5",
        "-",
        "1e",
        "1e+",
        "1e400",
        "-1e400",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "9223372036854775808",
        "2.5e-324",
        "\"a\"",
        "\"\"",
        "\"é\"",
        "\"\\n\"",
        "\"\\u00e9\"",
        "\"\\ud800\"",
        "\"a\u{1}b\"",
        "\"unterminated",
        "'single'",
        "true",
        "false",
        "null",
        "nul",
        "truex",
        "[]",
        "{}",
        "[1,]",
        "[,1]",
        "[1 2]",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{1:2}",
        "{\"a\":1}x",
        " \t\n\r7 ",
        "[1,[2,[3,[4]]]]",
        "{\"a\":{\"b\":{\"c\":[]}}}",
        "{\"a\":1,\"a\":2}",
        "[\"A\"]",
        "\"A\"",
        "{\"B\":1}",
        "\"B\"",
        "{\"type\":\"Click\",\"x\":-3}",
        "{\"type\":\"View\",\"page\":\"home\"}",
        "[3,4]",
        "[3,4,5]",
        "{\"1\":true,\"2\":false}",
        "{\"-1\":true}",
        "{\"a\":1.0,\"b\":-2}",
        "{\"a\":7}",
        "{\"a\":7,\"b\":[1,-2]}",
        "{\"a\":7,\"c\":0}",
        "{\"user_id\":1,\"amount_cents\":-2}",
        "{\"user_id\":91033,\"amount_cents\":50767,\"ts\":1700000000000}",
        "{\"amount_cents\":5,\"user_id\":6,\"note\":null,\"tag\":\"t\",\"flags\":[true,false],\
         \"extra\":{\"k\":-1},\"nothing\":null,\"initial\":\"x\",\"small\":255,\"ratio\":0.1,\
         \"ignored\":{\"deep\":[1,{\"x\":\"y\"},null,1e5]}}",
        "{\"user_id\":1,\"amount_cents\":2,\"small\":256}",
        "{\"user_id\":1,\"amount_cents\":2,\"initial\":\"xy\"}",
        "{\"user_id\":1,\"amount_cents\":2,\"tag\":\"\\t\"}",
        "{\"user_id\":1.0,\"amount_cents\":2}",
        "{\"user_id\":\"1\",\"amount_cents\":2}",
        "{\"user_id\":1,\"amount_cents\":2,\"ignored\":\"\\\"\"}",
        "{\"user_id\":1,\"amount_cents\":2,\"ignored\":[01]}",
        "{\"user_id\":1,\"amount_cents\":2,\"ignored\":\"\u{7f}\u{80}\"}",
    ];

    #[test]
    fn edge_cases_decode_as_serde_json_decodes_them() {
        for doc in EDGE_CASES {
            all_types(doc.as_bytes());
        }
        // Invalid UTF-8 in a string, read and skipped.
        all_types(b"\"\xff\"");
        all_types(b"{\"user_id\":1,\"amount_cents\":2,\"x\":\"\xc3\"}");
        // Nesting beyond the fast path's depth and beyond serde_json's.
        for depth in [99, 100, 101, 127, 128, 129, 200] {
            let doc = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            all_types(doc.as_bytes());
        }
    }

    #[test]
    fn the_fast_path_takes_the_common_shapes() {
        // The workspace's serde_json has no `arbitrary_precision`.
        assert!(fast_path_sound());
        let w1 = br#"{"user_id":91033,"amount_cents":50767,"ts":1700000000000}"#;
        assert!(fast::<Transaction>(w1));
        assert!(fast::<Value>(w1));
        assert!(fast::<Value>(
            br#" [1, -2, 3.5, "x", true, null, {"a": {}}] "#
        ));
        assert!(fast::<Tagged>(br#"{"type":"View","page":"home"}"#));
        assert!(fast::<Untagged>(b"[1,2]"));
        // What it leaves to serde_json.
        assert!(!fast::<String>(br#""\n""#));
        assert!(!fast::<Value>(b"-0"));
        assert!(!fast::<Value>(b"18446744073709551616"));
        assert!(!fast::<Plain>(br#""A""#));
        assert!(!fast::<BTreeMap<u64, bool>>(br#"{"1":true}"#));
        assert!(!fast::<Value>(b"[1] x"));
    }

    /// A small xorshift, so that the documents are the same in every run.
    fn rng(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    fn random_value(next: &mut impl FnMut(u64) -> u64, depth: u32) -> Value {
        let strings = [
            "",
            "a",
            "user_id",
            "amount_cents",
            "tag",
            "é",
            "x\"y",
            "\\",
            "\n",
            "type",
        ];
        match next(if depth == 0 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => Value::Bool(next(2) == 0),
            2 => json!(next(u64::MAX) >> next(64)),
            3 => json!(-((next(u64::MAX) >> (1 + next(63))) as i64)),
            4 => json!((next(1 << 20) as f64 - 5e5) / (1 + next(1000)) as f64),
            5 => json!(strings[next(strings.len() as u64) as usize]),
            6 => Value::Array(
                (0..next(4))
                    .map(|_| random_value(next, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..next(5))
                    .map(|_| {
                        let key = strings[next(strings.len() as u64) as usize].to_owned();
                        (key, random_value(next, depth - 1))
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn random_documents_and_their_mutations_decode_as_serde_json_decodes_them() {
        let mut next = rng(0x5eed_1234_abcd_9876);
        let bytes = b" \t\n\"\\{}[],:-+.0123456789eEtrufalsn\xc3\xa9\x01";
        for _ in 0..3_000 {
            let value = random_value(&mut next, 3);
            let mut doc = if next(2) == 0 {
                serde_json::to_vec(&value).unwrap()
            } else {
                serde_json::to_vec_pretty(&value).unwrap()
            };
            all_types(&doc);
            // A byte changed, inserted or cut.
            let at = next(doc.len() as u64 + 1) as usize;
            let byte = bytes[next(bytes.len() as u64) as usize];
            match next(3) {
                0 if at < doc.len() => doc[at] = byte,
                1 => doc.insert(at, byte),
                _ => doc.truncate(at),
            }
            all_types(&doc);
        }
        // Shaped like the transactions, in any field order, with extras.
        for _ in 0..3_000 {
            let mut fields = vec![
                format!("\"user_id\":{}", next(u64::MAX) >> next(64)),
                format!("\"amount_cents\":{}", next(1 << 40) as i64 - (1 << 39)),
                format!("\"rate\":{}e{}", next(1000), next(40) as i64 - 20),
                format!("\"tag\":\"t{}\"", next(100)),
                format!(
                    "\"flags\":[{}]",
                    ["", "true", "true,false"][next(3) as usize]
                ),
                format!("\"small\":{}", next(300)),
                format!("\"ignored\":{}", random_value(&mut next, 2)),
            ];
            for i in (1..fields.len()).rev() {
                fields.swap(i, next(i as u64 + 1) as usize);
            }
            fields.truncate(2 + next(fields.len() as u64 - 1) as usize);
            let doc = format!("{{{}}}", fields.join(","));
            all_types(doc.as_bytes());
        }
    }
}
