// A test plugin: plugins/state-probe in JavaScript. Every event changes
// value, map and list state of its key and emits what it then reads back, so
// a test sees whether reads observe the writes made earlier in the same
// batch (the SDK's overlay) and in earlier batches (the host's state).

import { ListState, MapState, Processor, ValueState, exportProcessor } from "weir-sdk";

class StateProbe extends Processor {
  open(_config) {
    this.count = new ValueState("count");
    this.seen = new MapState("seen");
    this.history = new ListState("history");
  }

  process(ctx, event) {
    const n = event.json().n;
    const count = this.count.get(0) + 1;
    this.count.set(count);
    this.history.append(n);
    this.seen.put(n % 3, n);
    if (n % 5 === 0) this.seen.remove(n % 3);
    if (n % 7 === 0) this.history.clear();
    if (n % 11 === 0) this.seen.clear();
    ctx.emitJson({
      n,
      count,
      history: this.history.read(),
      seen: this.seen.entries(),
      has_zero: this.seen.contains(0),
    });
  }
}

export const handler = exportProcessor(StateProbe);
