"""W2 in Python: flags users who make too many transactions in a short time.

The rule of plugins/fraud-detector (Rust), line for line: per user (the
key), a window opens at the first transaction and lasts `window_ms`; the
`threshold`-th transaction inside it emits one alert to the side output
`alerts`. An event-time timer at the window's end clears it, and a
transaction at or after the end opens a new window even if that timer has
not fired yet (the watermark may lag behind the events).

State version 1: the window is JSON. A swap from the Rust fraud detector
(state version 0, postcard) migrates its windows, so a running pipeline
can move from Rust to Python (or JavaScript) with its windows intact.
"""

import json

from weir_sdk import PluginError, Processor, ValueState, encode_stored, export

ALERTS = "alerts"
WINDOW_STATE = "window"
DEFAULTS = {"threshold": 5, "window_ms": 60_000}


class FraudDetector(Processor):
    STATE_VERSION = 1

    def open(self, config):
        unknown = sorted(set(config) - set(DEFAULTS))
        if unknown:
            raise PluginError(f"unknown config field {unknown[0]!r}; expected threshold, window_ms")
        self.threshold = int(config.get("threshold", DEFAULTS["threshold"]))
        self.window_ms = int(config.get("window_ms", DEFAULTS["window_ms"]))
        if self.threshold < 1:
            raise PluginError("threshold must be at least 1")
        if self.window_ms <= 0:
            raise PluginError(f"window_ms must be positive, got {self.window_ms}")
        # {"start": event time of the first transaction, "count": transactions so far}
        self.window = ValueState(WINDOW_STATE)

    def process(self, ctx, event):
        user_id, ts = user_and_time(ctx, event)
        window = self.window.get()
        if window is not None and ts < window["start"] + self.window_ms:
            window["count"] += 1
        else:
            window = {"start": ts, "count": 1}
            ctx.register_event_time_timer(ts + self.window_ms)
        self.window.set(window)
        if window["count"] == self.threshold:
            ctx.emit_json_to(ALERTS, {"user_id": user_id, "window_start": window["start"], "ts": ts})

    def on_timer(self, ctx, timer):
        # A timer of an older window (reopened by expiry) must not clear the new one.
        window = self.window.get()
        if window is not None and timer.timestamp == window["start"] + self.window_ms:
            self.window.clear()

    def migrate(self, from_version, state, value):
        if from_version != 0 or state != WINDOW_STATE:
            raise PluginError(f"no migration of {state!r} from state version {from_version}")
        return encode_stored(window_from_version_0(value))


def window_from_version_0(value):
    """A window of state version 0: JSON from an earlier Python or
    JavaScript detector, or the Rust detector's postcard `Window { start:
    i64, count: u32 }` (zigzag varint, then varint). Postcard bytes of a
    window never parse as a JSON object."""
    try:
        window = json.loads(value)
        if isinstance(window, dict) and set(window) == {"start", "count"}:
            return window
    except ValueError:
        pass
    zigzag, at = read_varint(value, 0)
    count, at = read_varint(value, at)
    if at != len(value):
        raise PluginError(f"a window of state version 0 has {len(value) - at} bytes too many")
    return {"start": (zigzag >> 1) ^ -(zigzag & 1), "count": count}


def read_varint(data, at):
    """An unsigned LEB128 varint of `data` at `at`, and where it ends."""
    value = shift = 0
    while at < len(data) and shift < 70:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
    raise PluginError("a window of state version 0 ends inside a varint")


def user_and_time(ctx, event):
    """The user and event time of a transaction. A pipeline keyed by
    `/user_id` with event time from `/ts` hands both over already parsed,
    so the value is decoded (and validated) only when they are missing."""
    try:
        user_id = int(ctx.key)
    except ValueError:
        user_id = None
    if user_id is not None and ctx.timestamp is not None:
        return user_id, ctx.timestamp
    transaction = event.json()
    for field in ("user_id", "amount_cents", "ts"):
        if field not in transaction:
            raise PluginError(f"missing field `{field}`")
    return (
        transaction["user_id"] if user_id is None else user_id,
        transaction["ts"] if ctx.timestamp is None else ctx.timestamp,
    )


Handler = export(FraudDetector)
