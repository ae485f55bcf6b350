// {{name}}: a Weir plugin.
//
// Per key it counts events (state `count`) and emits the running count to
// `main`; events of at least `large_amount` also go to the side output
// `large`; and once a key has seen no event for `idle_ms` of event time, a
// timer reports it to the side output `idle`.

import { PluginError, Processor, ValueState, exportProcessor } from "weir-sdk";

const DEFAULTS = { large_amount: 1000, idle_ms: 60_000 };

class Plugin extends Processor {
  open(config) {
    const unknown = Object.keys(config).filter((field) => !(field in DEFAULTS));
    if (unknown.length > 0) {
      throw new PluginError(`unknown config field '${unknown.sort()[0]}'`);
    }
    this.largeAmount = config.large_amount ?? DEFAULTS.large_amount;
    this.idleMs = config.idle_ms ?? DEFAULTS.idle_ms;
    if (!(this.idleMs > 0)) {
      throw new PluginError("idle_ms must be positive");
    }
    this.count = new ValueState("count");
    this.lastSeen = new ValueState("last_seen");
  }

  process(ctx, event) {
    const { amount } = event.json();
    const count = this.count.get(0) + 1;
    this.count.set(count);
    ctx.emitJson({ key: ctx.keyText, count });
    if (amount >= this.largeAmount) {
      ctx.emitTo("large", event.value);
    }
    if (ctx.timestamp !== undefined) {
      this.lastSeen.set(ctx.timestamp);
      ctx.registerEventTimeTimer(ctx.timestamp + this.idleMs);
    }
  }

  onTimer(ctx, timer) {
    // Only the timer of the key's latest event reports; earlier ones are stale.
    const lastSeen = this.lastSeen.get();
    if (lastSeen !== undefined && timer.timestamp === lastSeen + this.idleMs) {
      ctx.emitJsonTo("idle", { key: ctx.keyText, count: this.count.get(0), last_seen: lastSeen });
    }
  }
}

export const handler = exportProcessor(Plugin);
