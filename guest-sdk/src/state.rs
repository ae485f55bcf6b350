//! Typed keyed state over the host's byte-valued states. Values (and map
//! keys) are encoded with postcard: compact, and the host never needs to
//! understand them. Every access applies to the key of the item in scope.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::sys::{RawListState, RawMapState, RawValueState};

fn encode<T: Serialize + ?Sized>(name: &str, value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(value).map_err(|error| cannot_encode(name, error))
}

fn cannot_encode(name: &str, error: postcard::Error) -> Error {
    Error::msg(format_args!("state \"{name}\": cannot encode: {error}"))
}

thread_local! {
    // Reused by every write: the raw states copy the bytes they are given,
    // so encoding need not allocate per write.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Hands `write` the encoded `value`, without allocating once warm.
fn with_encoded<T: Serialize + ?Sized>(
    name: &str,
    value: &T,
    write: impl FnOnce(&[u8]),
) -> Result<(), Error> {
    let mut buf = SCRATCH.take();
    buf.clear();
    let buf = postcard::to_extend(value, buf).map_err(|error| cannot_encode(name, error))?;
    write(&buf);
    SCRATCH.set(buf);
    Ok(())
}

pub(crate) fn decode<T: DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|error| {
        Error::msg(format_args!(
            "state \"{name}\": stored bytes do not decode as {}: {error}",
            std::any::type_name::<T>()
        ))
    })
}

/// Decodes a stored state value (a value, a map value or a list item) as
/// the typed states store it: what [`Processor::migrate`](crate::Processor::migrate)
/// receives. `state` names it in the error.
pub fn decode_stored<T: DeserializeOwned>(state: &str, bytes: &[u8]) -> Result<T, Error> {
    decode(state, bytes)
}

/// Encodes a value as the typed states store it: what `migrate` returns.
pub fn encode_stored<T: Serialize>(state: &str, value: &T) -> Result<Vec<u8>, Error> {
    encode(state, value)
}

/// One value of type `T` per key.
pub struct ValueState<T> {
    name: String,
    raw: RawValueState,
    // `fn() -> T`: the state stores no `T`, so it is Send/Sync regardless of `T`.
    _type: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    /// Declares the value state `name` (cheap and idempotent; do it in `open`).
    pub fn new(name: &str) -> Self {
        ValueState {
            name: name.to_owned(),
            raw: RawValueState::new(name),
            _type: PhantomData,
        }
    }

    /// The current key's value, if set.
    pub fn get(&self) -> Result<Option<T>, Error> {
        self.raw
            .get_with(|bytes| bytes.map(|bytes| decode(&self.name, bytes)))
            .transpose()
    }

    /// Sets the current key's value.
    pub fn set(&self, value: &T) -> Result<(), Error> {
        with_encoded(&self.name, value, |bytes| self.raw.set(bytes))
    }

    /// Removes the current key's value.
    pub fn clear(&self) {
        self.raw.clear();
    }
}

/// A map from `K` to `V` per key, ordered by the encoded bytes of `K`
/// (which, for integers, is not their numeric order).
pub struct MapState<K, V> {
    name: String,
    raw: RawMapState,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> MapState<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// Declares the map state `name` (cheap and idempotent; do it in `open`).
    pub fn new(name: &str) -> Self {
        MapState {
            name: name.to_owned(),
            raw: RawMapState::new(name),
            _types: PhantomData,
        }
    }

    /// The value under `key` in the current key's map.
    pub fn get<Q>(&self, key: &Q) -> Result<Option<V>, Error>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.raw
            .get(&encode(&self.name, key)?)
            .map(|bytes| decode(&self.name, &bytes))
            .transpose()
    }

    /// Puts `value` under `key`, replacing any previous value.
    pub fn put<Q>(&self, key: &Q, value: &V) -> Result<(), Error>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.raw
            .put(&encode(&self.name, key)?, &encode(&self.name, value)?);
        Ok(())
    }

    /// Removes `key`, if present.
    pub fn remove<Q>(&self, key: &Q) -> Result<(), Error>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.raw.remove(&encode(&self.name, key)?);
        Ok(())
    }

    /// Whether `key` is present.
    pub fn contains<Q>(&self, key: &Q) -> Result<bool, Error>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        Ok(self.raw.contains(&encode(&self.name, key)?))
    }

    /// Every entry of the current key's map.
    pub fn entries(&self) -> Result<Vec<(K, V)>, Error> {
        self.raw
            .entries()
            .into_iter()
            .map(|(k, v)| Ok((decode(&self.name, &k)?, decode(&self.name, &v)?)))
            .collect()
    }

    /// Whether the current key's map is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Empties the current key's map.
    pub fn clear(&self) {
        self.raw.clear();
    }
}

/// An append-only list of `T` per key.
pub struct ListState<T> {
    name: String,
    raw: RawListState,
    _type: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> ListState<T> {
    /// Declares the list state `name` (cheap and idempotent; do it in `open`).
    pub fn new(name: &str) -> Self {
        ListState {
            name: name.to_owned(),
            raw: RawListState::new(name),
            _type: PhantomData,
        }
    }

    /// Appends `value` to the current key's list.
    pub fn append(&self, value: &T) -> Result<(), Error> {
        with_encoded(&self.name, value, |bytes| self.raw.append(bytes))
    }

    /// The current key's list, oldest first.
    pub fn read(&self) -> Result<Vec<T>, Error> {
        self.raw
            .read()
            .iter()
            .map(|bytes| decode(&self.name, bytes))
            .collect()
    }

    /// Empties the current key's list.
    pub fn clear(&self) {
        self.raw.clear();
    }
}

macro_rules! debug_by_name {
    ($($state:ident<$($t:ident),+>),*) => {$(
        impl<$($t),+> fmt::Debug for $state<$($t),+> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($state)).field(&self.name).finish()
            }
        }
    )*};
}
debug_by_name!(ValueState<T>, MapState<K, V>, ListState<T>);
