// Type declarations for Weir's JavaScript SDK (index.js). See docs/js.md.

/** Anything `JSON.stringify` takes: what states store. */
export type Json = null | boolean | number | string | Json[] | { [field: string]: Json };

/** The two time domains of timers. */
export declare const TimeDomain: {
  readonly EVENT_TIME: "event-time";
  readonly PROCESSING_TIME: "processing-time";
};
export type TimeDomain = (typeof TimeDomain)[keyof typeof TimeDomain];

/** Log levels, for `ctx.log`. */
export declare const Level: {
  readonly TRACE: "trace";
  readonly DEBUG: "debug";
  readonly INFO: "info";
  readonly WARN: "warn";
  readonly ERROR: "error";
};
export type Level = (typeof Level)[keyof typeof Level];

/** Throw it to reject an item (or a config, or a migration) with a
 * message; the item goes to `dead-letter` with that reason. */
export declare class PluginError extends Error {
  constructor(message: string);
}

/** Encodes a value as the states store it (compact JSON, utf-8). */
export declare function encodeStored(value: unknown): Uint8Array;
/** Decodes a stored value. */
export declare function decodeStored(data: Uint8Array): any;

/** One input record. */
export declare class Event {
  /** The key the pipeline keyed it by, or undefined. */
  readonly key: Uint8Array | undefined;
  readonly value: Uint8Array;
  /** Event time in ms since the Unix epoch, if the pipeline assigns one. */
  readonly timestamp: number | undefined;
  readonly headers: Array<[string, Uint8Array]>;
  /** The value, as text. */
  text(): string;
  /** The value, parsed as JSON. */
  json(): any;
}

/** A timer that fired for `key`. */
export declare class Timer {
  readonly key: Uint8Array;
  readonly timestamp: number;
  readonly domain: TimeDomain;
}

/** The item being handled and the host's services. */
export declare class Context {
  /** The current key (empty if the event is not keyed). */
  readonly key: Uint8Array;
  /** The current key, as text. */
  readonly keyText: string;
  /** The event time of the item (ms); for a timer, its timestamp. */
  readonly timestamp: number | undefined;
  /** The event-time watermark: no event at or before it is expected any more. */
  watermark(): number;
  /** The host's wall clock, in ms since the Unix epoch. */
  processingTime(): number;
  registerEventTimeTimer(timestamp: number): void;
  deleteEventTimeTimer(timestamp: number): void;
  registerProcessingTimeTimer(timestamp: number): void;
  deleteProcessingTimeTimer(timestamp: number): void;
  /** Emits to the main output, keyed by the current key unless `key` is given. */
  emit(value: string | Uint8Array, key?: string | Uint8Array): void;
  /** Emits to the side output `output` (e.g. "alerts"), keyed by the current key. */
  emitTo(output: string, value: string | Uint8Array): void;
  emitJson(value: unknown): void;
  emitJsonTo(output: string, value: unknown): void;
  log(level: Level | "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR", message: string): void;
  counterAdd(name: string, delta?: number | bigint): void;
}

/** One value per key. */
export declare class ValueState<T = any> {
  constructor(name: string);
  readonly name: string;
  get(): T | undefined;
  get(fallback: T): T;
  set(value: T): void;
  clear(): void;
}

/** A map per key, ordered by the JSON bytes of its keys. */
export declare class MapState<K = any, V = any> {
  constructor(name: string);
  readonly name: string;
  get(key: K): V | undefined;
  get(key: K, fallback: V): V;
  put(key: K, value: V): void;
  remove(key: K): void;
  contains(key: K): boolean;
  entries(): Array<[K, V]>;
  isEmpty(): boolean;
  clear(): void;
}

/** An append-only list per key. */
export declare class ListState<T = any> {
  constructor(name: string);
  readonly name: string;
  append(value: T): void;
  /** The current key's list, oldest first. */
  read(): T[];
  clear(): void;
}

/** A keyed process function: the whole of a Weir plugin. Keep everything
 * durable in states, never in `this`. */
export declare class Processor {
  /** The version of the format this plugin keeps its state in. */
  static STATE_VERSION: number;
  /** The pipeline's config, parsed (`{}` when absent). Throw to refuse it. */
  open(config: any): void;
  /** Handles one event. Throwing rejects it (it is dead-lettered). */
  process(ctx: Context, event: Event): void;
  /** Handles one fired timer. By default does nothing. */
  onTimer(ctx: Context, timer: Timer): void;
  /** Rewrites one stored value written in state version `fromVersion`:
   * the new bytes, or null to drop it. */
  migrate(fromVersion: number, state: string, value: Uint8Array): Uint8Array | null;
}

/** The `weir:plugin/handler` export componentize-js wraps. */
export interface Handler {
  open(config: string): void;
  /** A packed `event-batch` (see the WIT). */
  process(batch: unknown): unknown;
  /** A packed `timer-batch` (see the WIT). */
  onTimer(batch: unknown): unknown;
  stateVersion(): number;
  migrate(from: number, items: unknown[]): Array<Uint8Array | undefined>;
}

/** In the plugin's `app.js`: `export const handler = exportProcessor(MyPlugin);` */
export declare function exportProcessor(processor: new () => Processor): Handler;
