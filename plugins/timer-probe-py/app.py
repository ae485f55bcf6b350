"""A test plugin: the Python SDK's timers, clocks, side outputs, logs and
counters, exercised so a test reads off the outputs what the host did.

Event `{"id": "e1", "timer": 5000}` echoes `{"event", "ts", "watermark"}`
to `main` and its bytes to the side output `echo`, and registers an
event-time timer at 5000; `"cancel": 5000` deletes it; `"after_ms": 0`
registers a processing-time timer that many ms after the host's clock;
`"after_ms_cancelled": n` registers one and deletes it at once. A fired
timer emits `{"timer", "key", "processing_time"}` to `main`, logs, and
counts `processing-time-timers` or `event-time-timers`.
"""

from weir_sdk import Level, Processor, TimeDomain, export


class TimerProbe(Processor):
    def process(self, ctx, event):
        value = event.json()
        ctx.emit_json({"event": value["id"], "ts": ctx.timestamp, "watermark": ctx.watermark()})
        ctx.emit_to("echo", event.value)
        if "timer" in value:
            ctx.register_event_time_timer(value["timer"])
        if "cancel" in value:
            ctx.delete_event_time_timer(value["cancel"])
        if "after_ms" in value:
            ctx.register_processing_time_timer(ctx.processing_time() + value["after_ms"])
        if "after_ms_cancelled" in value:
            at = ctx.processing_time() + value["after_ms_cancelled"]
            ctx.register_processing_time_timer(at)
            ctx.delete_processing_time_timer(at)

    def on_timer(self, ctx, timer):
        processing = timer.domain == TimeDomain.PROCESSING_TIME
        ctx.log(Level.INFO, f"timer {timer.timestamp} fired")
        ctx.counter_add("processing-time-timers" if processing else "event-time-timers")
        ctx.emit_json({"timer": timer.timestamp, "key": ctx.key.decode(), "processing_time": processing})


Handler = export(TimerProbe)
