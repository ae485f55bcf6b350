// A test plugin: plugins/timer-probe-py in JavaScript. The SDK's timers,
// clocks, side outputs, logs and counters, exercised so a test reads off the
// outputs what the host did.
//
// Event `{"id": "e1", "timer": 5000}` echoes `{event, ts, watermark}` to
// `main` and its bytes to the side output `echo`, and registers an
// event-time timer at 5000; `"cancel": 5000` deletes it; `"after_ms": 0`
// registers a processing-time timer that many ms after the host's clock;
// `"after_ms_cancelled": n` registers one and deletes it at once. A fired
// timer emits `{timer, key, processing_time}` to `main`, logs, and counts
// `processing-time-timers` or `event-time-timers`.

import { Level, Processor, TimeDomain, exportProcessor } from "weir-sdk";

class TimerProbe extends Processor {
  process(ctx, event) {
    const value = event.json();
    ctx.emitJson({ event: value.id, ts: ctx.timestamp, watermark: ctx.watermark() });
    ctx.emitTo("echo", event.value);
    if ("timer" in value) {
      ctx.registerEventTimeTimer(value.timer);
    }
    if ("cancel" in value) {
      ctx.deleteEventTimeTimer(value.cancel);
    }
    if ("after_ms" in value) {
      ctx.registerProcessingTimeTimer(ctx.processingTime() + value.after_ms);
    }
    if ("after_ms_cancelled" in value) {
      const at = ctx.processingTime() + value.after_ms_cancelled;
      ctx.registerProcessingTimeTimer(at);
      ctx.deleteProcessingTimeTimer(at);
    }
  }

  onTimer(ctx, timer) {
    const processing = timer.domain === TimeDomain.PROCESSING_TIME;
    ctx.log(Level.INFO, `timer ${timer.timestamp} fired`);
    ctx.counterAdd(processing ? "processing-time-timers" : "event-time-timers");
    ctx.emitJson({ timer: timer.timestamp, key: ctx.keyText, processing_time: processing });
  }
}

export const handler = exportProcessor(TimerProbe);
