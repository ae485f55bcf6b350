"""The base class a plugin author subclasses, and `export`, which turns it
into the component's `handler` exports: the batch contract of wit/weir.wit
becomes one `process` (or `on_timer`) call per item, each with its key in
scope, and the changes the items make come back as the batch's result.
"""

import json
import struct
import traceback

from wit_world.types import Err
from wit_world.imports.types import BatchResult, Failure, TimeDomain

from ._batch import BATCH
from .context import Context, Event, Timer


class PluginError(Exception):
    """Raise it to reject an item (or a config, or a migration) with a
    message; the item goes to `dead-letter` with that reason."""


class Processor:
    """A keyed process function: the whole of a Weir plugin.

    The host builds an instance and calls `open` (again after every swap),
    then `process` for each event and `on_timer` for each fired timer, with
    the item's key in scope. Keep everything durable in states
    (`ValueState` and friends), never in `self`.
    """

    #: The version of the format this plugin keeps its state in. Raise it
    #: when the format changes, and implement `migrate`.
    STATE_VERSION = 0

    def open(self, config):
        """Starts the plugin with its config (the pipeline's JSON, parsed;
        `{}` when absent). Create states here. Raise to refuse the config."""

    def process(self, ctx, event):
        """Handles one `Event`. Raising rejects the event (it is
        dead-lettered; changes it made before raising stand)."""
        raise NotImplementedError("a Processor must implement process(ctx, event)")

    def on_timer(self, ctx, timer):
        """Handles one fired `Timer`. By default does nothing."""

    def migrate(self, from_version, state, value):
        """Rewrites one stored value (bytes) of the state named `state`,
        written in state version `from_version`, into this version's format:
        return the new bytes, or None to drop it. Called before `open`.
        Raising refuses the swap. By default values are kept as they are."""
        return value


def _reason(error):
    if isinstance(error, PluginError):
        return str(error)
    # The last frame says where an unexpected exception came from.
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def _parse_config(config):
    text = config.strip()
    parsed = json.loads(text) if text else None
    return {} if parsed is None else parsed


class _Item:
    """One unpacked event or timer of a batch."""

    __slots__ = ("key", "value", "timestamp", "headers", "domain")

    def __init__(self, key, value=None, timestamp=None, headers=None, domain=None):
        self.key = key
        self.value = value
        self.timestamp = timestamp
        self.headers = headers
        self.domain = domain


# An event's lengths and time cross as 24 bytes, little-endian
# (`packed-event` in the WIT): key length (-1 = no key), value length,
# first-of-key, has-timestamp, 3 zero bytes, timestamp.
_EVENT = struct.Struct("<iIIB3xq")
# A fired timer's, likewise (`packed-timer`): key length, first-of-key,
# time domain (case index), 7 zero bytes, timestamp.
_TIMER = struct.Struct("<IIB7xq")
_DOMAINS = (TimeDomain.EVENT_TIME, TimeDomain.PROCESSING_TIME)


def _unpack_events(batch):
    """The host packs a batch's keys and values into one buffer and each
    event's lengths and time into a record (the WIT's `event-batch`); the
    handlers take one item per event."""
    data = batch.bytes
    headers = {h.event: h.headers for h in batch.headers}
    items = []
    at = 0
    for index, (key_len, value_len, _first, has_time, timestamp) in enumerate(
        _EVENT.iter_unpack(batch.events)
    ):
        key = None
        if key_len >= 0:
            key = data[at : at + key_len]
            at += key_len
        value = data[at : at + value_len]
        at += value_len
        timestamp = timestamp if has_time == 1 else None
        items.append(_Item(key, value, timestamp, headers.get(index, [])))
    return items


def _unpack_timers(batch):
    """Fired timers, packed like events (the WIT's `timer-batch`)."""
    items = []
    at = 0
    for key_len, _first, domain, timestamp in _TIMER.iter_unpack(batch.timers):
        key = batch.keys[at : at + key_len]
        at += key_len
        if domain >= len(_DOMAINS):
            raise ValueError(f"the host sent a timer with time domain {domain}")
        items.append(_Item(key, timestamp=timestamp, domain=_DOMAINS[domain]))
    return items


def export(processor_class):
    """The `Handler` class componentize-py exports for `processor_class`.
    In the plugin's module: `Handler = weir_sdk.export(MyPlugin)`."""

    plugin = [None]

    def run_batch(items, handle):
        failures = []
        batch = BATCH
        for index, item in enumerate(items):
            # An event without a key is handled with the empty key.
            batch.begin(index, item.key or b"")
            try:
                handle(item)
            except Exception as error:  # noqa: BLE001 - any error rejects the item
                failures.append(Failure(index, _reason(error)))
        data, changes = batch.take_changes()
        return BatchResult(data, changes, failures)

    def current():
        if plugin[0] is None:
            raise RuntimeError("the host called the plugin before a successful `open`")
        return plugin[0]

    class Handler:
        def open(self, config):
            try:
                instance = processor_class()
                instance.open(_parse_config(config))
            except Exception as error:  # noqa: BLE001
                raise Err(_reason(error))
            # A second `open` (after a swap) replaces the previous instance.
            plugin[0] = instance

        def process(self, batch):
            instance = current()

            def handle(event):
                instance.process(
                    Context(event.key, event.timestamp),
                    Event(event.key, event.value, event.timestamp, event.headers),
                )

            return run_batch(_unpack_events(batch), handle)

        def on_timer(self, batch):
            instance = current()

            def handle(timer):
                instance.on_timer(
                    Context(timer.key, timer.timestamp),
                    Timer(timer.key, timer.timestamp, timer.domain),
                )

            return run_batch(_unpack_timers(batch), handle)

        def state_version(self):
            return int(processor_class.STATE_VERSION)

        def migrate(self, from_, items):
            instance = processor_class()
            results = []
            for item in items:
                try:
                    value = instance.migrate(from_, item.state, item.value)
                except Exception as error:  # noqa: BLE001
                    raise Err(f"migrating state {item.state!r}: {_reason(error)}")
                results.append(None if value is None else bytes(value))
            return results

    Handler.__name__ = Handler.__qualname__ = "Handler"
    return Handler
