//! The input record a plugin handles: key, value bytes, event time, headers.

use serde::{Deserialize, Serialize};

use crate::Error;

/// One input record.
///
/// The value is raw bytes; [`Event::json`] decodes it. The constructors exist
/// so tests can build events for `testing::Harness` (native targets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Vec<u8>,
    pub(crate) timestamp: Option<i64>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

impl Event {
    /// A keyed event without timestamp or headers.
    pub fn new(key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) -> Self {
        Event {
            key: Some(key.as_ref().to_vec()),
            value: value.into(),
            ..Event::default()
        }
    }

    /// An event without key (a pipeline without `key_by`).
    pub fn unkeyed(value: impl Into<Vec<u8>>) -> Self {
        Event {
            value: value.into(),
            ..Event::default()
        }
    }

    /// A keyed event whose value is `value` serialized as JSON.
    ///
    /// # Panics
    /// If `value` cannot be serialized as JSON (for example a map with
    /// non-string keys): this is a test-building helper.
    pub fn new_json(key: impl AsRef<[u8]>, value: &(impl Serialize + ?Sized)) -> Self {
        let bytes = serde_json::to_vec(value).expect("the event value serializes as JSON");
        Event::new(key, bytes)
    }

    /// The same event with this event time (ms since the Unix epoch).
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// The same event with one more header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The key the pipeline keyed this event by, if it is keyed.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The value bytes.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The event time, in ms since the Unix epoch, if the pipeline assigns one.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// All headers, in arrival order.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The value decoded from JSON, exactly as serde_json decodes it (the
    /// same value or the same error), by a faster path where it can. `T` may
    /// borrow from the event (`&str`).
    pub fn json<'a, T: Deserialize<'a>>(&'a self) -> Result<T, Error> {
        Ok(crate::json::from_slice(&self.value)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_event_decodes_back_to_its_value() {
        let event = Event::new_json("k", &serde_json::json!({"a": 1})).with_timestamp(7);
        let value: serde_json::Value = event.json().unwrap();
        assert_eq!(value["a"], 1);
        assert_eq!(event.key(), Some(&b"k"[..]));
        assert_eq!(event.timestamp(), Some(7));
    }

    #[test]
    fn a_value_that_is_not_json_gives_an_error_not_a_panic() {
        let event = Event::unkeyed("not json");
        assert!(event.json::<serde_json::Value>().is_err());
        assert_eq!(event.key(), None);
    }

    #[test]
    fn headers_are_found_by_name() {
        let event = Event::unkeyed("v")
            .with_header("a", "1")
            .with_header("b", "2");
        assert_eq!(event.header("b"), Some(&b"2"[..]));
        assert_eq!(event.header("c"), None);
        assert_eq!(event.headers().len(), 2);
    }
}
