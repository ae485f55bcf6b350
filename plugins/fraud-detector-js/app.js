// W2 in JavaScript: flags users who make too many transactions in a short time.
//
// The rule of plugins/fraud-detector (Rust), line for line: per user (the
// key), a window opens at the first transaction and lasts `window_ms`; the
// `threshold`-th transaction inside it emits one alert to the side output
// `alerts`. An event-time timer at the window's end clears it, and a
// transaction at or after the end opens a new window even if that timer has
// not fired yet (the watermark may lag behind the events).

import { PluginError, Processor, ValueState, exportProcessor } from "weir-sdk";

const ALERTS = "alerts";
const WINDOW_STATE = "window";
const DEFAULTS = { threshold: 5, window_ms: 60_000 };

class FraudDetector extends Processor {
  open(config) {
    const unknown = Object.keys(config)
      .filter((field) => !(field in DEFAULTS))
      .sort();
    if (unknown.length > 0) {
      throw new PluginError(`unknown config field '${unknown[0]}'; expected threshold, window_ms`);
    }
    this.threshold = integer(config, "threshold");
    this.windowMs = integer(config, "window_ms");
    if (this.threshold < 1) {
      throw new PluginError("threshold must be at least 1");
    }
    if (this.windowMs <= 0) {
      throw new PluginError(`window_ms must be positive, got ${this.windowMs}`);
    }
    // {start: event time of the first transaction, count: transactions so far}
    this.window = new ValueState(WINDOW_STATE);
  }

  process(ctx, event) {
    const [userId, ts] = userAndTime(ctx, event);
    let window = this.window.get();
    if (window !== undefined && ts < window.start + this.windowMs) {
      window.count += 1;
    } else {
      window = { start: ts, count: 1 };
      ctx.registerEventTimeTimer(ts + this.windowMs);
    }
    this.window.set(window);
    if (window.count === this.threshold) {
      ctx.emitJsonTo(ALERTS, { user_id: userId, window_start: window.start, ts });
    }
  }

  onTimer(ctx, timer) {
    // A timer of an older window (reopened by expiry) must not clear the new one.
    const window = this.window.get();
    if (window !== undefined && timer.timestamp === window.start + this.windowMs) {
      this.window.clear();
    }
  }
}

function integer(config, field) {
  const value = config[field] ?? DEFAULTS[field];
  if (!Number.isInteger(value)) {
    throw new PluginError(`${field} must be an integer, got ${JSON.stringify(value)}`);
  }
  return value;
}

// The user and event time of a transaction. A pipeline keyed by `/user_id`
// with event time from `/ts` hands both over already parsed, so the value is
// decoded (and validated) only when they are missing.
function userAndTime(ctx, event) {
  const key = ctx.keyText;
  const userId = /^-?\d+$/.test(key) ? Number(key) : undefined;
  if (userId !== undefined && ctx.timestamp !== undefined) {
    return [userId, ctx.timestamp];
  }
  const transaction = event.json();
  for (const field of ["user_id", "amount_cents", "ts"]) {
    if (!(field in transaction)) {
      throw new PluginError(`missing field \`${field}\``);
    }
  }
  return [
    userId === undefined ? transaction.user_id : userId,
    ctx.timestamp === undefined ? transaction.ts : ctx.timestamp,
  ];
}

export const handler = exportProcessor(FraudDetector);
