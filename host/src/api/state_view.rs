//! How one key's state reads in `GET .../state/{key}`: each state by its
//! declared name, its bytes as JSON when they are JSON, as text when they
//! are text, else base64 (the Rust SDK's compact encoding, say).

use serde_json::{Value, json};

use crate::runtime::{KeyStateView, NamedState};

pub(crate) fn states_json(view: &KeyStateView) -> Vec<Value> {
    view.states
        .iter()
        .map(|s| match s {
            NamedState::Value { name, value } => {
                json!({"name": name, "kind": "value", "value": show_bytes(value)})
            }
            NamedState::Map { name, entries } => json!({"name": name, "kind": "map",
                "entries": entries.iter().map(|(k, v)| json!([show_bytes(k), show_bytes(v)])).collect::<Vec<_>>()}),
            NamedState::List { name, items } => json!({"name": name, "kind": "list",
                "items": items.iter().map(|i| show_bytes(i)).collect::<Vec<_>>()}),
        })
        .collect()
}

/// Bytes as people can read them: JSON if they are, else text, else base64.
fn show_bytes(bytes: &[u8]) -> Value {
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        return value;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
            Value::String(text.to_owned())
        }
        // Binary (the Rust SDK's compact encoding, say).
        _ => json!({ "base64": base64(bytes) }),
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (chunk.get(1).copied().unwrap_or(0) as u32) << 8
            | chunk.get(2).copied().unwrap_or(0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_bytes_show_as_json_text_or_base64() {
        assert_eq!(show_bytes(b"{\"n\":3}"), json!({"n": 3}));
        assert_eq!(show_bytes(b"abc"), json!("abc"));
        assert_eq!(show_bytes(&[0xff, 0x00, 0x10]), json!({"base64": "/wAQ"}));
        assert_eq!(show_bytes(&[2]), json!({"base64": "Ag=="}));
        assert_eq!(base64(b"hello"), "aGVsbG8=");
    }
}
