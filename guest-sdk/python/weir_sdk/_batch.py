"""The batch in hand: the item being handled, the changes made so far (the
batch's result) and an overlay of them per (state, key), so that reads see
the writes made earlier in the same batch (the host applies the changes only
after the call returns). Reads that the overlay cannot answer cross into the
host, by (state, item). Mirrors guest-sdk/src/sys/wasm.rs.
"""

import math
import struct

from wit_world.imports import state as host_state
from wit_world.imports.types import ChangeOp, TimeDomain

# A change crosses back as 32 bytes, little-endian (`packed-change` in the
# WIT): item, op, domain, 2 zero bytes, state, name, key and value lengths
# (-1 = absent), timestamp.
_CHANGE = struct.Struct("<IBBxxIiiiq")
_OP_CODES = {
    op: code
    for code, op in enumerate([
        ChangeOp.VALUE_SET, ChangeOp.VALUE_CLEAR, ChangeOp.MAP_PUT,
        ChangeOp.MAP_REMOVE, ChangeOp.MAP_CLEAR, ChangeOp.LIST_APPEND,
        ChangeOp.LIST_CLEAR, ChangeOp.TIMER_REGISTER, ChangeOp.TIMER_DELETE,
        ChangeOp.EMIT,
    ])
}
_DOMAIN_CODES = {TimeDomain.EVENT_TIME: 0, TimeDomain.PROCESSING_TIME: 1}

# A value cleared earlier in the batch (distinct from "not written").
CLEARED = object()


def _time(timestamp):
    """A timer's time in ms as an int (a float is truncated, as the
    JavaScript SDK does), or an error that says what is wrong with it."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        raise TypeError(f"a timestamp is a number of ms, got {timestamp!r}")
    if isinstance(timestamp, float) and not math.isfinite(timestamp):
        raise ValueError(f"a timestamp is a number of ms, got {timestamp!r}")
    timestamp = int(timestamp)
    if not -(1 << 63) <= timestamp < (1 << 63):
        raise ValueError(f"a timestamp must fit in 64 bits, got {timestamp}")
    return timestamp


class Batch:
    __slots__ = ("item", "key", "changes", "bytes", "values", "maps", "lists")

    def __init__(self):
        self.item = 0
        self.key = b""
        # The batch's result, packed: 32-byte change records and one
        # buffer of their byte fields (name, key, value), back to back.
        self.changes = bytearray()
        self.bytes = bytearray()
        # (state, key) -> bytes, or CLEARED
        self.values = {}
        # (state, key) -> [cleared, {map key: bytes or None}]
        self.maps = {}
        # (state, key) -> [cleared, [appended bytes]]
        self.lists = {}

    def begin(self, item, key):
        self.item = item
        self.key = key

    def take_changes(self):
        """Ends the batch: (bytes, changes) of its result, and a clean slate."""
        changes, data = bytes(self.changes), bytes(self.bytes)
        self.changes.clear()
        self.bytes.clear()
        self.values.clear()
        self.maps.clear()
        self.lists.clear()
        return data, changes

    def _field(self, data):
        if data is None:
            return -1
        self.bytes += data
        return len(data)

    def push(self, op, state, name=None, key=None, value=None,
             domain=TimeDomain.EVENT_TIME, timestamp=0):
        """Appends a change of the current item with its byte fields."""
        self.changes += _CHANGE.pack(
            self.item, _OP_CODES[op], _DOMAIN_CODES[domain], state,
            self._field(name), self._field(key), self._field(value), timestamp,
        )

    # Value state.

    def value_get(self, state):
        pending = self.values.get((state, self.key))
        if pending is None:
            return host_state.value_get(state, self.item)
        return None if pending is CLEARED else pending

    def value_set(self, state, value):
        self.values[(state, self.key)] = value
        self.push(ChangeOp.VALUE_SET, state, value=value)

    def value_clear(self, state):
        self.values[(state, self.key)] = CLEARED
        self.push(ChangeOp.VALUE_CLEAR, state)

    # Map state.

    def _map_overlay(self, state):
        overlay = self.maps.get((state, self.key))
        if overlay is None:
            overlay = self.maps[(state, self.key)] = [False, {}]
        return overlay

    def map_get(self, state, map_key):
        overlay = self.maps.get((state, self.key))
        if overlay is not None:
            if map_key in overlay[1]:
                return overlay[1][map_key]
            if overlay[0]:
                return None
        return host_state.map_get(state, self.item, map_key)

    def map_put(self, state, map_key, value):
        self._map_overlay(state)[1][map_key] = value
        self.push(ChangeOp.MAP_PUT, state, key=map_key, value=value)

    def map_remove(self, state, map_key):
        self._map_overlay(state)[1][map_key] = None
        self.push(ChangeOp.MAP_REMOVE, state, key=map_key)

    def map_entries(self, state):
        """The current key's entries, ordered by map key bytes."""
        overlay = self.maps.get((state, self.key))
        if overlay is None:
            return list(host_state.map_entries(state, self.item))
        cleared, pending = overlay
        merged = {} if cleared else dict(host_state.map_entries(state, self.item))
        for map_key, value in pending.items():
            if value is None:
                merged.pop(map_key, None)
            else:
                merged[map_key] = value
        return sorted(merged.items())

    def map_clear(self, state):
        overlay = self._map_overlay(state)
        overlay[0] = True
        overlay[1].clear()
        self.push(ChangeOp.MAP_CLEAR, state)

    # List state.

    def list_append(self, state, value):
        overlay = self.lists.get((state, self.key))
        if overlay is None:
            overlay = self.lists[(state, self.key)] = [False, []]
        overlay[1].append(value)
        self.push(ChangeOp.LIST_APPEND, state, value=value)

    def list_read(self, state):
        overlay = self.lists.get((state, self.key))
        if overlay is None:
            return list(host_state.list_read(state, self.item))
        cleared, appended = overlay
        if cleared:
            return list(appended)
        return list(host_state.list_read(state, self.item)) + appended

    def list_clear(self, state):
        self.lists[(state, self.key)] = [True, []]
        self.push(ChangeOp.LIST_CLEAR, state)

    # Timers and outputs.

    def register_timer(self, domain, timestamp):
        self.push(ChangeOp.TIMER_REGISTER, 0, domain=domain, timestamp=_time(timestamp))

    def delete_timer(self, domain, timestamp):
        self.push(ChangeOp.TIMER_DELETE, 0, domain=domain, timestamp=_time(timestamp))

    def emit(self, output, key, value):
        name = None if output is None else output.encode()
        self.push(ChangeOp.EMIT, 0, name=name, key=key, value=value)


BATCH = Batch()
