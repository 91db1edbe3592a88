// The JavaScript SDK of spoa-host guests (componentize-js), the npm package
// `spoa-guest`: typed arguments, actions, configuration, randomness,
// logging, IP tables, the shared store, counters and batches; `./headers.js`
// parses HAProxy's `req.hdrs_bin` and `./testing.js` holds a store double
// for unit tests under Node.js (both plain JavaScript).
// The WIT types arrive as jco represents them: a variant is `{ tag, val }`,
// an enum is its case name as a string, u64 is a BigInt.
import { getRandomU64 } from 'spoa:agent/random@0.1.6';
import { log as hostLog } from 'spoa:agent/log@0.1.6';
import { open as hostOpenTable } from 'spoa:agent/ip-table@0.1.6';
import { answer as hostAnswer } from 'spoa:agent/batch@0.1.6';
import { increment as hostIncrement } from 'spoa:agent/metrics@0.1.6';
import { setWithTtl, incrementWithin, expiresIn } from 'spoa:agent/expiry@0.1.6';
import { get as configGet } from 'wasi:config/store@0.2.0-rc.1';
import { open as kvOpen } from 'wasi:keyvalue/store@0.2.0-draft';
export { parse as parseHeaders, find as findHeader, HeadersError } from './headers.js';

/**
 * Answers a batch (`handle-messages`) with `handle`, one message at a time,
 * each answer handed to the host as soon as it is ready, and returns when
 * the host says the batch has had its share of the thread (it calls again
 * with the rest). A throw from `handle` answers that message `err`, as a
 * throw from `handleMessage` does:
 * `export function handleMessages(msgs) { spoa.answerEach(msgs, handleMessage); }`
 */
export function answerEach(msgs, handle) {
  for (let i = 0; i < msgs.length; i++) {
    let answer;
    try {
      answer = { tag: 'ok', val: handle(msgs[i]) };
    } catch (e) {
      answer = { tag: 'err', val: typeof e === 'string' ? e : String(e?.payload ?? e) };
    }
    if (!hostAnswer(i, answer)) return;
  }
}

/** The value (`{ tag, val }`) of the argument `name`, or undefined. */
export function arg(msg, name) {
  // A plain loop: a closure per call costs in an interpreter.
  const args = msg.args;
  for (let i = 0; i < args.length; i++) {
    if (args[i].name === name) return args[i].value;
  }
  return undefined;
}

/**
 * An address as ipArg gives it. `bits` is a getter, computed at each read:
 * BigInt arithmetic is slow without a JIT, and a lookup in an IP table takes
 * the address's `parts` as they came. A copy (`{ ...ip }`) keeps `version`
 * and `parts`, not `bits`.
 */
class Address {
  constructor(version, parts) {
    this.version = version;
    this.parts = parts;
  }

  get bits() {
    return joinBits(this.parts, this.version === 4 ? 8n : 16n);
  }
}

/**
 * The argument `name` as an address (`version` 4 or 6, `bits` a BigInt,
 * `parts` its bytes or 16-bit groups), or undefined if it is missing or not
 * an ipv4/ipv6 value.
 */
export function ipArg(msg, name) {
  const v = arg(msg, name);
  if (v?.tag === 'ipv4') return new Address(4, v.val);
  if (v?.tag === 'ipv6') return new Address(6, v.val);
  return undefined;
}

function joinBits(parts, width) {
  return parts.reduce((acc, p) => (acc << width) | BigInt(p), 0n);
}

// Typed values for set-var.
export const int32 = (n) => ({ tag: 'int32', val: n | 0 });
export const int64 = (n) => ({ tag: 'int64', val: BigInt(n) });
export const boolean = (b) => ({ tag: 'boolean', val: !!b });
export const string = (s) => ({ tag: 'string', val: new TextEncoder().encode(s) });

/** A set-var action; scope is 'proc', 'sess', 'txn', 'req' or 'res'. */
export function setVar(scope, name, value) {
  return { tag: 'set-var', val: { scope, name, value } };
}

/** An unset-var action. */
export function unsetVar(scope, name) {
  return { tag: 'unset-var', val: { scope, name } };
}

/** The operator's setting `key` (`--guest-config key=value`), or `fallback`. */
export function config(key, fallback) {
  let value;
  try {
    value = configGet(key);
  } catch (e) {
    // The host's config source failed: answer err with the reason.
    throw `config ${key}: ${e?.payload?.val ?? e}`;
  }
  return value === undefined || value === null ? fallback : value;
}

/** A uniform random integer in 0..n-1 from the host (multiply-shift). */
export function randomBelow(n) {
  return Number((getRandomU64() * BigInt(n)) >> 64n);
}

/** Logs into the host's log: level is 'trace', 'debug', 'info', 'warn' or 'error'. */
export function log(level, message) {
  hostLog(level, String(message));
}

/**
 * The IP table the operator granted as `name` (`--ip-table name=PATH`), or
 * undefined when it is not granted. Open tables in `init` and keep them.
 */
export function openTable(name) {
  try {
    return hostOpenTable(name);
  } catch (e) {
    return undefined;
  }
}

/** An address from `ipArg` as the host's `ip-address`. */
function witAddress(ip) {
  // ipArg's addresses, and copies of them, carry their parts.
  if (Array.isArray(ip.parts)) return { tag: ip.version === 4 ? 'ipv4' : 'ipv6', val: ip.parts };
  const parts = ip.version === 4 ? 4 : 8;
  const width = ip.version === 4 ? 8n : 16n;
  const mask = (1n << width) - 1n;
  const val = [];
  for (let i = parts - 1; i >= 0; i--) val.push(Number((ip.bits >> (BigInt(i) * width)) & mask));
  return { tag: ip.version === 4 ? 'ipv4' : 'ipv6', val };
}

/**
 * Whether a network of `table` holds the address `ip` (from `ipArg`); false
 * without a table. An IPv4-mapped IPv6 address matches IPv4 networks.
 */
export function contains(table, ip) {
  return table !== undefined && table.contains(witAddress(ip));
}

/** The text at `path` ('country.iso_code') of the MaxMind DB record holding `ip`. */
export function textField(table, ip, path) {
  const hit = table?.lookupFields(witAddress(ip), [path]);
  const value = hit?.values?.[0];
  return value?.tag === 'text' ? value.val : undefined;
}

/**
 * Adds `by` to the guest's counter `name` (`spoa_guest_counter_total{guest,name}`);
 * false when the operator did not allow the name (`metrics = [...]`, `--guest-metric`).
 */
export function increment(name, by = 1) {
  try {
    hostIncrement(name, BigInt(by));
    return true;
  } catch (e) {
    return false;
  }
}

/** Adds one to the counter `name` (a name not allowed is ignored). */
export function count(name) {
  increment(name, 1);
}

/** A store call failed (down, out of time, not granted, not a counter). */
export class StoreError extends Error {}

function describe(e) {
  const payload = e?.payload;
  if (payload?.tag === 'access-denied') return 'access denied (bucket not granted)';
  if (payload?.tag === 'no-such-store') return 'no such store';
  return String(payload?.val ?? e);
}

function storeCall(call) {
  try {
    return call();
  } catch (e) {
    throw new StoreError(describe(e));
  }
}

/**
 * The agent's store: the bucket `name` ('default' unless the operator
 * granted others). Open it once per instance, in `init`. Every method throws
 * StoreError when the store fails; `testing.MemoryStore` has the same methods.
 */
export class HostStore {
  #bucket;
  constructor(name = 'default') {
    this.#bucket = storeCall(() => kvOpen(name));
  }
  get(key) { return storeCall(() => this.#bucket.get(key)); }
  set(key, value) { storeCall(() => this.#bucket.set(key, value)); }
  setWithTtl(key, value, ttlMs) { storeCall(() => setWithTtl(this.#bucket, key, value, BigInt(ttlMs))); }
  delete(key) { storeCall(() => this.#bucket.delete(key)); }
  exists(key) { return storeCall(() => this.#bucket.exists(key)); }
  incrementWithin(key, delta, windowMs) {
    return storeCall(() => incrementWithin(this.#bucket, key, BigInt(delta), BigInt(windowMs)));
  }
  expiresIn(key) { return storeCall(() => expiresIn(this.#bucket, key)); }
}
