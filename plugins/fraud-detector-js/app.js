// W2 in JavaScript: flags users who make too many transactions in a short time.
//
// The rule of plugins/fraud-detector (Rust), line for line: per user (the
// key), a window opens at the first transaction and lasts `window_ms`; the
// `threshold`-th transaction inside it emits one alert to the side output
// `alerts`. An event-time timer at the window's end clears it, and a
// transaction at or after the end opens a new window even if that timer has
// not fired yet (the watermark may lag behind the events).
//
// State version 1: the window is JSON. A swap from the Rust fraud detector
// (state version 0, postcard) migrates its windows, so a running pipeline
// can move from Rust to JavaScript (or Python) with its windows intact.

import { PluginError, Processor, ValueState, encodeStored, exportProcessor } from "weir-sdk";

const ALERTS = "alerts";
const WINDOW_STATE = "window";
const DEFAULTS = { threshold: 5, window_ms: 60_000 };

class FraudDetector extends Processor {
  static STATE_VERSION = 1;

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

  migrate(fromVersion, state, value) {
    if (fromVersion !== 0 || state !== WINDOW_STATE) {
      throw new PluginError(`no migration of '${state}' from state version ${fromVersion}`);
    }
    return encodeStored(windowFromVersion0(value));
  }
}

// A window of state version 0: JSON from an earlier Python or JavaScript
// detector, or the Rust detector's postcard `Window { start: i64, count: u32 }`
// (zigzag varint, then varint). Postcard bytes of a window never parse as a
// JSON object.
function windowFromVersion0(value) {
  try {
    const window = JSON.parse(new TextDecoder().decode(value));
    if (window !== null && typeof window === "object" && "start" in window && "count" in window) {
      return { start: window.start, count: window.count };
    }
  } catch {
    // Not JSON: postcard.
  }
  const [zigzag, at] = readVarint(value, 0);
  const [count, end] = readVarint(value, at);
  if (end !== value.length) {
    throw new PluginError(`a window of state version 0 has ${value.length - end} bytes too many`);
  }
  // Numbers, not bit operations (those are 32-bit): event times need 41 bits.
  const start = zigzag % 2 === 0 ? zigzag / 2 : -(zigzag + 1) / 2;
  return { start, count };
}

// An unsigned LEB128 varint of `data` at `at`, and where it ends.
function readVarint(data, at) {
  let value = 0;
  for (let scale = 1; at < data.length && scale < 2 ** 56; scale *= 128) {
    const byte = data[at];
    at += 1;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      return [value, at];
    }
  }
  throw new PluginError("a window of state version 0 ends inside a varint");
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
