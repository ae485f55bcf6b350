// Weir's JavaScript SDK: write a keyed process function as a WebAssembly
// component with componentize-js (see docs/js.md).
//
//     import { Processor, ValueState, exportProcessor } from "weir-sdk";
//
//     class Counter extends Processor {
//       open(config) { this.count = new ValueState("count"); }
//       process(ctx, event) {
//         const n = this.count.get(0) + 1;
//         this.count.set(n);
//         ctx.emit(String(n));
//       }
//     }
//
//     export const handler = exportProcessor(Counter);
//
// The contract (wit/weir.wit) hands events over in batches; the SDK calls
// `process` once per event with its key in scope and overlays the batch's
// own writes, so a read sees what an earlier event of the same batch wrote.
// It mirrors the Python SDK (guest-sdk/python) concept for concept, and
// stores states as the same JSON, so Python and JavaScript versions of a
// plugin read each other's state.

import * as hostState from "weir:plugin/state@0.1.0";
import * as hostTimers from "weir:plugin/timers@0.1.0";
import * as hostLog from "weir:plugin/log@0.1.0";

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** The two time domains of timers. */
export const TimeDomain = Object.freeze({
  EVENT_TIME: "event-time",
  PROCESSING_TIME: "processing-time",
});

/** Log levels, for `ctx.log`. */
export const Level = Object.freeze({
  TRACE: "trace",
  DEBUG: "debug",
  INFO: "info",
  WARN: "warn",
  ERROR: "error",
});

/** Throw it to reject an item (or a config, or a migration) with a
 * message; the item goes to `dead-letter` with that reason. */
export class PluginError extends Error {
  constructor(message) {
    super(message);
    this.name = "PluginError";
  }
}

// ---------------------------------------------------------------------------
// Stored values: JSON, utf-8, compact (what the Python SDK writes too).

/** Encodes a value as the states store it (what `migrate` returns). */
export function encodeStored(value) {
  const text = JSON.stringify(value);
  if (text === undefined) {
    throw new TypeError(`cannot store ${typeof value} as JSON`);
  }
  return utf8Encoder.encode(text);
}

/** Decodes a stored value (what `migrate` receives). */
export function decodeStored(data) {
  return JSON.parse(utf8Decoder.decode(data));
}

function toBytes(value) {
  if (typeof value === "string") return utf8Encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  throw new TypeError("an output value is a string or bytes (Uint8Array)");
}

function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

// Overlay keys: a state id and a key's bytes, as one string.
function slot(state, key) {
  let s = `${state}:`;
  for (let i = 0; i < key.length; i++) s += String.fromCharCode(key[i]);
  return s;
}

// ---------------------------------------------------------------------------
// The batch in hand: the item being handled, the changes made so far (the
// batch's result) and an overlay of them per (state, key), so that reads see
// the writes made earlier in the same batch (the host applies the changes
// only after the call returns). Reads the overlay cannot answer cross into
// the host, by (state, item). Mirrors guest-sdk/python/weir_sdk/_batch.py.

const CLEARED = Symbol("cleared");

// A change crosses back as 32 bytes, little-endian (`packed-change` in the
// WIT): item u32, op u8, domain u8, 2 zero bytes, state u32, name, key and
// value lengths s32 (-1 = absent), timestamp s64.
const CHANGE_SIZE = 32;
const OP_CODES = {
  "value-set": 0,
  "value-clear": 1,
  "map-put": 2,
  "map-remove": 3,
  "map-clear": 4,
  "list-append": 5,
  "list-clear": 6,
  "timer-register": 7,
  "timer-delete": 8,
  emit: 9,
};
const DOMAIN_CODES = { "event-time": 0, "processing-time": 1 };

class Batch {
  constructor() {
    this.item = 0;
    this.key = new Uint8Array(0);
    this.keySlot = "";
    // The batch's result, packed: 32-byte change records (a buffer reused
    // across batches), and their byte fields (name, key, value) as parts to
    // concatenate once at the end.
    this.changes = new Uint8Array(64 * CHANGE_SIZE);
    this.view = new DataView(this.changes.buffer);
    this.changesLen = 0;
    this.parts = [];
    this.size = 0;
    // slot -> bytes, or CLEARED
    this.values = new Map();
    // slot -> { cleared, entries: Map(JSON text of the map key -> [key bytes, bytes or null]) }
    this.maps = new Map();
    // slot -> { cleared, appended: [bytes] }
    this.lists = new Map();
  }

  begin(item, key) {
    this.item = item;
    this.key = key;
    this.keySlot = slot("", key);
  }

  /** Ends the batch: `{ bytes, changes }` of its result, and a clean slate. */
  takeChanges() {
    const bytes = new Uint8Array(this.size);
    let at = 0;
    for (const part of this.parts) {
      bytes.set(part, at);
      at += part.length;
    }
    const changes = this.changes.slice(0, this.changesLen);
    this.changesLen = 0;
    this.parts = [];
    this.size = 0;
    this.values.clear();
    this.maps.clear();
    this.lists.clear();
    return { bytes, changes };
  }

  /** Appends a change of the current item; `name`, `key` and `value` are
   * its byte fields (Uint8Array), each possibly undefined. */
  push(op, state, { name, key, value, domain = "event-time", timestamp = 0n } = {}) {
    if (this.changesLen + CHANGE_SIZE > this.changes.length) {
      const grown = new Uint8Array(this.changes.length * 2);
      grown.set(this.changes);
      this.changes = grown;
      this.view = new DataView(grown.buffer);
    }
    const opCode = OP_CODES[op];
    const domainCode = DOMAIN_CODES[domain];
    if (opCode === undefined || domainCode === undefined) {
      throw new Error(`weir-sdk: no change ${op} in domain ${domain}`);
    }
    const at = this.changesLen;
    const view = this.view;
    view.setUint32(at, this.item, true);
    view.setUint8(at + 4, opCode);
    view.setUint8(at + 5, domainCode);
    view.setUint16(at + 6, 0, true);
    view.setUint32(at + 8, state, true);
    view.setInt32(at + 12, this.field(name), true);
    view.setInt32(at + 16, this.field(key), true);
    view.setInt32(at + 20, this.field(value), true);
    view.setBigInt64(at + 24, timestamp, true);
    this.changesLen += CHANGE_SIZE;
  }

  field(bytes) {
    if (bytes === undefined) return -1;
    this.parts.push(bytes);
    this.size += bytes.length;
    return bytes.length;
  }

  at(state) {
    return state + this.keySlot;
  }

  // Value state.

  valueGet(state) {
    const pending = this.values.get(this.at(state));
    if (pending === undefined) return hostState.valueGet(state, this.item);
    return pending === CLEARED ? undefined : pending;
  }

  valueSet(state, value) {
    this.values.set(this.at(state), value);
    this.push("value-set", state, { value });
  }

  valueClear(state) {
    this.values.set(this.at(state), CLEARED);
    this.push("value-clear", state);
  }

  // Map state.

  mapOverlay(state) {
    const at = this.at(state);
    let overlay = this.maps.get(at);
    if (overlay === undefined) {
      overlay = { cleared: false, entries: new Map() };
      this.maps.set(at, overlay);
    }
    return overlay;
  }

  mapGet(state, mapKey) {
    const overlay = this.maps.get(this.at(state));
    if (overlay !== undefined) {
      const pending = overlay.entries.get(slot("", mapKey));
      if (pending !== undefined) return pending[1] === null ? undefined : pending[1];
      if (overlay.cleared) return undefined;
    }
    return hostState.mapGet(state, this.item, mapKey);
  }

  mapPut(state, mapKey, value) {
    this.mapOverlay(state).entries.set(slot("", mapKey), [mapKey, value]);
    this.push("map-put", state, { key: mapKey, value });
  }

  mapRemove(state, mapKey) {
    this.mapOverlay(state).entries.set(slot("", mapKey), [mapKey, null]);
    this.push("map-remove", state, { key: mapKey });
  }

  /** The current key's entries, [key bytes, value bytes], ordered by key bytes. */
  mapEntries(state) {
    const overlay = this.maps.get(this.at(state));
    if (overlay === undefined) return hostState.mapEntries(state, this.item);
    const merged = new Map();
    if (!overlay.cleared) {
      for (const [k, v] of hostState.mapEntries(state, this.item)) {
        merged.set(slot("", k), [k, v]);
      }
    }
    for (const [at, [k, v]] of overlay.entries) {
      if (v === null) merged.delete(at);
      else merged.set(at, [k, v]);
    }
    return [...merged.values()].sort((a, b) => compareBytes(a[0], b[0]));
  }

  mapClear(state) {
    const overlay = this.mapOverlay(state);
    overlay.cleared = true;
    overlay.entries.clear();
    this.push("map-clear", state);
  }

  // List state.

  listAppend(state, value) {
    const at = this.at(state);
    let overlay = this.lists.get(at);
    if (overlay === undefined) {
      overlay = { cleared: false, appended: [] };
      this.lists.set(at, overlay);
    }
    overlay.appended.push(value);
    this.push("list-append", state, { value });
  }

  listRead(state) {
    const overlay = this.lists.get(this.at(state));
    if (overlay === undefined) return hostState.listRead(state, this.item);
    if (overlay.cleared) return [...overlay.appended];
    return [...hostState.listRead(state, this.item), ...overlay.appended];
  }

  listClear(state) {
    this.lists.set(this.at(state), { cleared: true, appended: [] });
    this.push("list-clear", state);
  }

  // Timers and outputs.

  registerTimer(domain, timestamp) {
    this.push("timer-register", 0, { domain, timestamp: toTime(timestamp) });
  }

  deleteTimer(domain, timestamp) {
    this.push("timer-delete", 0, { domain, timestamp: toTime(timestamp) });
  }

  emit(output, key, value) {
    const name = output === undefined ? undefined : utf8Encoder.encode(output);
    this.push("emit", 0, { name, key, value });
  }
}

function toTime(timestamp) {
  if (typeof timestamp === "bigint") return timestamp;
  if (!Number.isFinite(timestamp)) {
    throw new TypeError(`a timestamp is a number of ms, got ${timestamp}`);
  }
  return BigInt(Math.trunc(timestamp));
}

const BATCH = new Batch();

// ---------------------------------------------------------------------------
// What a plugin sees while handling one item.

/** One input record. */
export class Event {
  constructor(key, value, timestamp, headers) {
    /** The key the pipeline keyed it by (Uint8Array), or undefined. */
    this.key = key;
    /** The record's bytes (Uint8Array). */
    this.value = value;
    /** Event time in ms since the Unix epoch, if the pipeline assigns one. */
    this.timestamp = timestamp;
    /** A list of [name, bytes]. */
    this.headers = headers ?? [];
  }

  /** The value, as text. */
  text() {
    return utf8Decoder.decode(this.value);
  }

  /** The value, parsed as JSON. */
  json() {
    return JSON.parse(utf8Decoder.decode(this.value));
  }
}

/** A timer that fired for `key`. */
export class Timer {
  constructor(key, timestamp, domain) {
    this.key = key;
    this.timestamp = timestamp;
    /** `TimeDomain.EVENT_TIME` or `TimeDomain.PROCESSING_TIME`. */
    this.domain = domain;
  }
}

/** The item being handled and the host's services. */
export class Context {
  constructor(key, timestamp) {
    this._key = key;
    /** The event time of the item (ms); for a timer, its timestamp. */
    this.timestamp = timestamp;
  }

  /** The current key, as bytes (empty if the event is not keyed). */
  get key() {
    return this._key ?? new Uint8Array(0);
  }

  /** The current key, as text. */
  get keyText() {
    return this._key === undefined ? "" : utf8Decoder.decode(this._key);
  }

  /** The event-time watermark: no event at or before it is expected any more. */
  watermark() {
    return fromS64(hostTimers.currentWatermark());
  }

  /** The host's wall clock, in ms since the Unix epoch. */
  processingTime() {
    return fromS64(hostTimers.currentProcessingTime());
  }

  /** Fires `onTimer` for this key once the watermark reaches `timestamp`. */
  registerEventTimeTimer(timestamp) {
    BATCH.registerTimer(TimeDomain.EVENT_TIME, timestamp);
  }

  deleteEventTimeTimer(timestamp) {
    BATCH.deleteTimer(TimeDomain.EVENT_TIME, timestamp);
  }

  /** Fires `onTimer` for this key once the wall clock reaches `timestamp`. */
  registerProcessingTimeTimer(timestamp) {
    BATCH.registerTimer(TimeDomain.PROCESSING_TIME, timestamp);
  }

  deleteProcessingTimeTimer(timestamp) {
    BATCH.deleteTimer(TimeDomain.PROCESSING_TIME, timestamp);
  }

  /** Emits `value` (string or bytes) to the main output, keyed by the current
   * key (none for an unkeyed event) unless `key` is given. */
  emit(value, key) {
    BATCH.emit(undefined, key === undefined ? this._key : toBytes(key), toBytes(value));
  }

  /** Emits `value` (string or bytes) to the side output `output` (for
   * example "alerts"), keyed by the current key. `late` and `dead-letter`
   * are the host's alone. */
  emitTo(output, value) {
    BATCH.emit(output, this._key, toBytes(value));
  }

  /** Emits `value` as compact JSON to the main output. */
  emitJson(value) {
    BATCH.emit(undefined, this._key, encodeStored(value));
  }

  /** Emits `value` as compact JSON to the side output `output`. */
  emitJsonTo(output, value) {
    BATCH.emit(output, this._key, encodeStored(value));
  }

  /** Writes a log line through the host; `level` is a `Level` ("info", ...). */
  log(level, message) {
    const name = String(level).toLowerCase();
    if (!Object.values(Level).includes(name)) {
      throw new TypeError(`unknown log level ${level}`);
    }
    hostLog.log(name, String(message));
  }

  /** Adds `delta` (default 1) to the host counter `name`. */
  counterAdd(name, delta = 1) {
    hostLog.counterAdd(name, BigInt(delta));
  }
}

// ---------------------------------------------------------------------------
// Keyed state over the host's byte-valued states. Values (and map keys) are
// stored as JSON (utf-8): anything `JSON.stringify` takes. Every access
// applies to the key of the item in scope. Create states in `open`.

class State {
  constructor(name, kind) {
    this.name = name;
    // Declaring is idempotent and cheap; a name keeps its first kind.
    this.id = hostState.declare(name, kind);
  }
}

/** One value per key. */
export class ValueState extends State {
  constructor(name) {
    super(name, "value");
  }

  /** The current key's value, or `fallback` if unset. */
  get(fallback = undefined) {
    const data = BATCH.valueGet(this.id);
    return data === undefined || data === null ? fallback : decodeStored(data);
  }

  /** Sets the current key's value. */
  set(value) {
    BATCH.valueSet(this.id, encodeStored(value));
  }

  /** Removes the current key's value. */
  clear() {
    BATCH.valueClear(this.id);
  }
}

/** A map per key, ordered by the JSON bytes of its keys (so number keys are
 * not in numeric order). */
export class MapState extends State {
  constructor(name) {
    super(name, "map");
  }

  get(key, fallback = undefined) {
    const data = BATCH.mapGet(this.id, encodeStored(key));
    return data === undefined || data === null ? fallback : decodeStored(data);
  }

  put(key, value) {
    BATCH.mapPut(this.id, encodeStored(key), encodeStored(value));
  }

  remove(key) {
    BATCH.mapRemove(this.id, encodeStored(key));
  }

  contains(key) {
    const data = BATCH.mapGet(this.id, encodeStored(key));
    return data !== undefined && data !== null;
  }

  /** Every [key, value] of the current key's map. */
  entries() {
    return BATCH.mapEntries(this.id).map(([k, v]) => [decodeStored(k), decodeStored(v)]);
  }

  isEmpty() {
    return BATCH.mapEntries(this.id).length === 0;
  }

  clear() {
    BATCH.mapClear(this.id);
  }
}

/** An append-only list per key. */
export class ListState extends State {
  constructor(name) {
    super(name, "list");
  }

  append(value) {
    BATCH.listAppend(this.id, encodeStored(value));
  }

  /** The current key's list, oldest first. */
  read() {
    return BATCH.listRead(this.id).map(decodeStored);
  }

  clear() {
    BATCH.listClear(this.id);
  }
}

// ---------------------------------------------------------------------------
// The base class a plugin author extends, and `exportProcessor`, which turns
// it into the component's `handler` export.

/** A keyed process function: the whole of a Weir plugin.
 *
 * The host builds an instance and calls `open` (again after every swap),
 * then `process` for each event and `onTimer` for each fired timer, with the
 * item's key in scope. Keep everything durable in states (`ValueState` and
 * friends), never in `this`. */
export class Processor {
  /** The version of the format this plugin keeps its state in. Raise it
   * when the format changes, and implement `migrate`. */
  static STATE_VERSION = 0;

  /** Starts the plugin with its config (the pipeline's JSON, parsed; `{}`
   * when absent). Create states here. Throw to refuse the config. */
  open(_config) {}

  /** Handles one `Event`. Throwing rejects the event (it is dead-lettered;
   * changes it made before throwing stand). */
  process(_ctx, _event) {
    throw new Error("a Processor must implement process(ctx, event)");
  }

  /** Handles one fired `Timer`. By default does nothing. */
  onTimer(_ctx, _timer) {}

  /** Rewrites one stored value (bytes) of the state named `state`, written
   * in state version `fromVersion`, into this version's format: return the
   * new bytes, or null to drop it. Called before `open`. Throwing refuses
   * the swap. By default values are kept as they are. */
  migrate(_fromVersion, _state, value) {
    return value;
  }
}

function reason(error) {
  if (error instanceof PluginError) return error.message;
  if (!(error instanceof Error)) return String(error);
  // The first frame of the stack says where an unexpected error came from.
  const frame = (error.stack ?? "").split("\n").find((line) => line.trim() !== "");
  const where = frame ? ` (at ${frame.trim()})` : "";
  return `${error.name}: ${error.message}${where}`;
}

function parseConfig(config) {
  const text = config.trim();
  const parsed = text ? JSON.parse(text) : null;
  return parsed ?? {};
}

// How componentize-js turns a thrown value into a WIT `result` error.
function refusal(message) {
  const error = new Error(message);
  error.payload = message;
  return error;
}

// componentize-js 0.23 lifts a negative s64 as its unsigned value (the
// watermark starts at i64::MIN): reinterpret the 64 bits as signed.
function fromS64(value) {
  return Number(BigInt.asIntN(64, BigInt(value)));
}

// The host packs a batch's keys and values into one buffer and each event's
// lengths and time into a 24-byte record (the WIT's `event-batch` and
// `packed-event`); the handlers take one object per event.
function unpackEvents({ bytes, events, headers }) {
  const records = new DataView(events.buffer, events.byteOffset, events.byteLength);
  const count = Math.floor(events.byteLength / EVENT_SIZE);
  const out = new Array(count);
  let at = 0;
  let next = 0;
  for (let index = 0; index < count; index++) {
    const record = index * EVENT_SIZE;
    const keyLen = records.getInt32(record, true);
    const valueLen = records.getUint32(record + 4, true);
    let key;
    if (keyLen >= 0) {
      key = bytes.subarray(at, at + keyLen);
      at += keyLen;
    }
    const value = bytes.subarray(at, at + valueLen);
    at += valueLen;
    const timestamp =
      records.getUint8(record + 12) === 1
        ? Number(records.getBigInt64(record + 16, true))
        : undefined;
    let eventHeaders = [];
    if (next < headers.length && headers[next].event === index) {
      eventHeaders = headers[next].headers;
      next++;
    }
    out[index] = { key, value, timestamp, headers: eventHeaders };
  }
  return out;
}

// Fired timers, packed like events (the WIT's `timer-batch` and
// `packed-timer`).
function unpackTimers({ keys, timers }) {
  const records = new DataView(timers.buffer, timers.byteOffset, timers.byteLength);
  const count = Math.floor(timers.byteLength / TIMER_SIZE);
  const out = new Array(count);
  let at = 0;
  for (let index = 0; index < count; index++) {
    const record = index * TIMER_SIZE;
    const keyLen = records.getUint32(record, true);
    const key = keys.subarray(at, at + keyLen);
    at += keyLen;
    const domain = TIMER_DOMAINS[records.getUint8(record + 8)];
    if (domain === undefined) {
      throw new Error(`the host sent a timer with time domain ${records.getUint8(record + 8)}`);
    }
    const timestamp = Number(records.getBigInt64(record + 16, true));
    out[index] = { key, timestamp, domain };
  }
  return out;
}

const EVENT_SIZE = 24;
const TIMER_SIZE = 24;
// `time-domain`'s cases by their index, as a timer's record carries them.
const TIMER_DOMAINS = [TimeDomain.EVENT_TIME, TimeDomain.PROCESSING_TIME];

/** The `handler` export for `ProcessorClass`. In the plugin's module:
 * `export const handler = exportProcessor(MyPlugin);` */
export function exportProcessor(ProcessorClass) {
  let plugin = null;

  function runBatch(items, handle) {
    const failures = [];
    for (let index = 0; index < items.length; index++) {
      const item = items[index];
      // An event without a key is handled with the empty key.
      BATCH.begin(index, item.key ?? new Uint8Array(0));
      try {
        handle(item);
      } catch (error) {
        failures.push({ item: index, reason: reason(error) });
      }
    }
    return { ...BATCH.takeChanges(), failures };
  }

  function current() {
    if (plugin === null) {
      throw new Error("the host called the plugin before a successful `open`");
    }
    return plugin;
  }

  return {
    open(config) {
      let instance;
      try {
        instance = new ProcessorClass();
        instance.open(parseConfig(config));
      } catch (error) {
        throw refusal(reason(error));
      }
      // A second `open` (after a swap) replaces the previous instance.
      plugin = instance;
    },

    process(batch) {
      const instance = current();
      return runBatch(unpackEvents(batch), (event) => {
        instance.process(
          new Context(event.key, event.timestamp),
          new Event(event.key, event.value, event.timestamp, event.headers),
        );
      });
    },

    onTimer(batch) {
      const instance = current();
      return runBatch(unpackTimers(batch), (timer) => {
        instance.onTimer(
          new Context(timer.key, timer.timestamp),
          new Timer(timer.key, timer.timestamp, timer.domain),
        );
      });
    },

    stateVersion() {
      return Number(ProcessorClass.STATE_VERSION ?? 0);
    },

    migrate(from, items) {
      const instance = new ProcessorClass();
      return items.map((item) => {
        let value;
        try {
          value = instance.migrate(from, item.state, item.value);
        } catch (error) {
          throw refusal(`migrating state ${JSON.stringify(item.state)}: ${reason(error)}`);
        }
        return value === null || value === undefined ? undefined : toBytes(value);
      });
    },
  };
}
