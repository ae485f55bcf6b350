"""{{name}}: a Weir plugin.

Per key it counts events (state `count`) and emits the running count to
`main`; events of at least `large_amount` also go to the side output
`large`; and once a key has seen no event for `idle_ms` of event time, a
timer reports it to the side output `idle`.
"""

from weir_sdk import PluginError, Processor, ValueState, export

DEFAULTS = {"large_amount": 1000, "idle_ms": 60_000}


class Plugin(Processor):
    def open(self, config):
        unknown = sorted(set(config) - set(DEFAULTS))
        if unknown:
            raise PluginError(f"unknown config field {unknown[0]!r}")
        self.large_amount = config.get("large_amount", DEFAULTS["large_amount"])
        self.idle_ms = config.get("idle_ms", DEFAULTS["idle_ms"])
        if self.idle_ms <= 0:
            raise PluginError("idle_ms must be positive")
        self.count = ValueState("count")
        self.last_seen = ValueState("last_seen")

    def process(self, ctx, event):
        amount = event.json()["amount"]
        key = ctx.key.decode()
        count = self.count.get(0) + 1
        self.count.set(count)
        ctx.emit_json({"key": key, "count": count})
        if amount >= self.large_amount:
            ctx.emit_to("large", event.value)
        if ctx.timestamp is not None:
            self.last_seen.set(ctx.timestamp)
            ctx.register_event_time_timer(ctx.timestamp + self.idle_ms)

    def on_timer(self, ctx, timer):
        # Only the timer of the key's latest event reports; earlier ones are stale.
        last_seen = self.last_seen.get()
        if last_seen is not None and timer.timestamp == last_seen + self.idle_ms:
            ctx.emit_json_to(
                "idle",
                {"key": ctx.key.decode(), "count": self.count.get(0), "last_seen": last_seen},
            )


Handler = export(Plugin)
