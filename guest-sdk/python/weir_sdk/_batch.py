"""The batch in hand: the item being handled, the changes made so far (the
batch's result) and an overlay of them per (state, key), so that reads see
the writes made earlier in the same batch (the host applies the changes only
after the call returns). Reads that the overlay cannot answer cross into the
host, by (state, item). Mirrors guest-sdk/src/sys/wasm.rs.
"""

from wit_world.imports import state as host_state
from wit_world.imports.types import (
    Change,
    Effect_Emit,
    Effect_ListAppend,
    Effect_ListClear,
    Effect_MapClear,
    Effect_MapPut,
    Effect_MapRemove,
    Effect_TimerDelete,
    Effect_TimerRegister,
    Effect_ValueClear,
    Effect_ValueSet,
    MapDelete,
    MapWrite,
    OutputRecord,
    TimerChange,
    ValueWrite,
)

# A value cleared earlier in the batch (distinct from "not written").
CLEARED = object()


class Batch:
    __slots__ = ("item", "key", "changes", "values", "maps", "lists")

    def __init__(self):
        self.item = 0
        self.key = b""
        self.changes = []
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
        changes = self.changes
        self.changes = []
        self.values.clear()
        self.maps.clear()
        self.lists.clear()
        return changes

    def push(self, effect):
        self.changes.append(Change(self.item, effect))

    # Value state.

    def value_get(self, state):
        pending = self.values.get((state, self.key))
        if pending is None:
            return host_state.value_get(state, self.item)
        return None if pending is CLEARED else pending

    def value_set(self, state, value):
        self.values[(state, self.key)] = value
        self.push(Effect_ValueSet(ValueWrite(state, value)))

    def value_clear(self, state):
        self.values[(state, self.key)] = CLEARED
        self.push(Effect_ValueClear(state))

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
        self.push(Effect_MapPut(MapWrite(state, map_key, value)))

    def map_remove(self, state, map_key):
        self._map_overlay(state)[1][map_key] = None
        self.push(Effect_MapRemove(MapDelete(state, map_key)))

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
        self.push(Effect_MapClear(state))

    # List state.

    def list_append(self, state, value):
        overlay = self.lists.get((state, self.key))
        if overlay is None:
            overlay = self.lists[(state, self.key)] = [False, []]
        overlay[1].append(value)
        self.push(Effect_ListAppend(ValueWrite(state, value)))

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
        self.push(Effect_ListClear(state))

    # Timers and outputs.

    def register_timer(self, domain, timestamp):
        self.push(Effect_TimerRegister(TimerChange(domain, timestamp)))

    def delete_timer(self, domain, timestamp):
        self.push(Effect_TimerDelete(TimerChange(domain, timestamp)))

    def emit(self, output, key, value):
        self.push(Effect_Emit(OutputRecord(output, key, value)))


BATCH = Batch()
