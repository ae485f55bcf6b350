"""Keyed state over the host's byte-valued states. Values (and map keys) are
stored as JSON (utf-8): anything `json.dumps` takes. Every access applies to
the key of the item in scope. Create states in `Processor.open`.
"""

import json

from wit_world.imports import state as host_state
from wit_world.imports.state import StateKind

from ._batch import BATCH


# One encoder for every write: `json.dumps` with options builds a new one per call.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_decode = json.JSONDecoder().decode


def encode_stored(value):
    """Encodes a value as the states store it (what `migrate` returns)."""
    return _encode(value).encode()


def decode_stored(data):
    """Decodes a stored value (what `migrate` receives)."""
    return _decode(data.decode())


class _State:
    __slots__ = ("name", "_id")
    _KIND = None

    def __init__(self, name):
        self.name = name
        # Declaring is idempotent and cheap; a name keeps its first kind.
        self._id = host_state.declare(name, self._KIND)

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


class ValueState(_State):
    """One value per key."""

    __slots__ = ()
    _KIND = StateKind.VALUE

    def get(self, default=None):
        """The current key's value, or `default` if unset."""
        data = BATCH.value_get(self._id)
        return default if data is None else decode_stored(data)

    def set(self, value):
        """Sets the current key's value."""
        BATCH.value_set(self._id, encode_stored(value))

    def clear(self):
        """Removes the current key's value."""
        BATCH.value_clear(self._id)


class MapState(_State):
    """A map per key, ordered by the JSON bytes of its keys (so integer keys
    are not in numeric order)."""

    __slots__ = ()
    _KIND = StateKind.MAP

    def get(self, key, default=None):
        data = BATCH.map_get(self._id, encode_stored(key))
        return default if data is None else decode_stored(data)

    def put(self, key, value):
        BATCH.map_put(self._id, encode_stored(key), encode_stored(value))

    def remove(self, key):
        BATCH.map_remove(self._id, encode_stored(key))

    def contains(self, key):
        return BATCH.map_get(self._id, encode_stored(key)) is not None

    def entries(self):
        """Every (key, value) of the current key's map."""
        return [(decode_stored(k), decode_stored(v)) for k, v in BATCH.map_entries(self._id)]

    def is_empty(self):
        return not BATCH.map_entries(self._id)

    def clear(self):
        BATCH.map_clear(self._id)


class ListState(_State):
    """An append-only list per key."""

    __slots__ = ()
    _KIND = StateKind.LIST

    def append(self, value):
        BATCH.list_append(self._id, encode_stored(value))

    def read(self):
        """The current key's list, oldest first."""
        return [decode_stored(item) for item in BATCH.list_read(self._id)]

    def clear(self):
        BATCH.list_clear(self._id)
