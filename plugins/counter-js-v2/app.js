// A test plugin: plugins/counter-py-v2 in JavaScript. It keeps its count in
// a new format (state version 1: {n, migrated}) and migrates counter-py's
// bare numbers, which Python wrote as JSON, as this SDK does.

import {
  PluginError,
  Processor,
  ValueState,
  decodeStored,
  encodeStored,
  exportProcessor,
} from "weir-sdk";

class CounterV2 extends Processor {
  static STATE_VERSION = 1;

  open(_config) {
    this.count = new ValueState("count");
  }

  process(ctx, event) {
    const count = this.count.get({ n: 0, migrated: false });
    count.n += 1;
    this.count.set(count);
    ctx.emitJson({
      key: ctx.keyText,
      count: count.n,
      seq: event.json().seq,
      migrated: count.migrated,
    });
  }

  migrate(fromVersion, state, value) {
    if (fromVersion !== 0 || state !== "count") {
      throw new PluginError(`no migration of '${state}' from version ${fromVersion}`);
    }
    return encodeStored({ n: decodeStored(value), migrated: true });
  }
}

export const handler = exportProcessor(CounterV2);
