"""What a plugin sees while handling one item: the item (an `Event` or a
`Timer`) and a `Context` with its key and time, the clocks, timers, outputs
and logs. Everything applies to the item in scope.
"""

import json
from enum import Enum

from wit_world.imports import log as host_log
from wit_world.imports import timers as host_timers
from wit_world.imports.types import TimeDomain

from ._batch import BATCH

Level = host_log.Level


class Event:
    """One input record."""

    __slots__ = ("key", "value", "timestamp", "headers")

    def __init__(self, key, value, timestamp=None, headers=None):
        #: The key the pipeline keyed it by (bytes), or None.
        self.key = key
        #: The record's bytes.
        self.value = value
        #: Event time in ms since the Unix epoch, if the pipeline assigns one.
        self.timestamp = timestamp
        #: A list of (name, bytes).
        self.headers = [] if headers is None else headers

    def text(self):
        return self.value.decode()

    def json(self):
        """The value, parsed as JSON."""
        return json.loads(self.value)

    def __repr__(self):
        return f"Event(key={self.key!r}, value={self.value!r}, timestamp={self.timestamp!r})"


class Timer:
    """A timer that fired for `key`."""

    __slots__ = ("key", "timestamp", "domain")

    def __init__(self, key, timestamp, domain):
        self.key = key
        self.timestamp = timestamp
        #: `TimeDomain.EVENT_TIME` or `TimeDomain.PROCESSING_TIME`.
        self.domain = domain

    def __repr__(self):
        return f"Timer(key={self.key!r}, timestamp={self.timestamp}, domain={self.domain})"


def _bytes(value):
    return value.encode() if isinstance(value, str) else bytes(value)


# One encoder for every output: `json.dumps` with options builds a new one per call.
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _json(value):
    return _encode_json(value).encode()


class Context:
    """The item being handled and the host's services."""

    __slots__ = ("_key", "timestamp")

    def __init__(self, key, timestamp):
        self._key = key
        #: The event time of the item; for a timer, its timestamp.
        self.timestamp = timestamp

    @property
    def key(self):
        """The current key, as bytes (empty if the event is not keyed)."""
        return self._key or b""

    def watermark(self):
        """The event-time watermark: no event at or before it is expected any more."""
        return host_timers.current_watermark()

    def processing_time(self):
        """The host's wall clock, in ms since the Unix epoch."""
        return host_timers.current_processing_time()

    def register_event_time_timer(self, timestamp):
        """Fires `on_timer` for this key once the watermark reaches `timestamp`."""
        BATCH.register_timer(TimeDomain.EVENT_TIME, timestamp)

    def delete_event_time_timer(self, timestamp):
        BATCH.delete_timer(TimeDomain.EVENT_TIME, timestamp)

    def register_processing_time_timer(self, timestamp):
        """Fires `on_timer` for this key once the wall clock reaches `timestamp`."""
        BATCH.register_timer(TimeDomain.PROCESSING_TIME, timestamp)

    def delete_processing_time_timer(self, timestamp):
        BATCH.delete_timer(TimeDomain.PROCESSING_TIME, timestamp)

    def emit(self, value, key=None):
        """Emits `value` (bytes or str) to the main output, keyed by the
        current key (none for an unkeyed event) unless `key` is given."""
        BATCH.emit(None, self._key if key is None else _bytes(key), _bytes(value))

    def emit_to(self, output, value):
        """Emits `value` (bytes or str) to the side output `output` (for
        example "alerts"), keyed by the current key. `late` and
        `dead-letter` are the host's alone."""
        BATCH.emit(output, self._key, _bytes(value))

    def emit_json(self, value):
        """Emits `value` as compact JSON to the main output."""
        BATCH.emit(None, self._key, _json(value))

    def emit_json_to(self, output, value):
        """Emits `value` as compact JSON to the side output `output`."""
        BATCH.emit(output, self._key, _json(value))

    def log(self, level, message):
        """Writes a log line through the host; `level` is a `Level` or its
        name ("info", "warn", ...)."""
        if not isinstance(level, Enum):
            level = Level[str(level).upper()]
        host_log.log(level, str(message))

    def counter_add(self, name, delta=1):
        """Adds `delta` to the host counter `name`."""
        host_log.counter_add(name, delta)
