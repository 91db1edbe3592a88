// A small SDK for spoa-host guests written in JavaScript (componentize-js):
// typed arguments, actions, configuration, randomness, logging and files.
// The WIT types arrive as jco represents them: a variant is `{ tag, val }`,
// an enum is its case name as a string, u64 is a BigInt.
import { getRandomU64 } from 'spoa:agent/random@0.1.2';
import { log as hostLog } from 'spoa:agent/log@0.1.2';
import { get as configGet } from 'wasi:config/store@0.2.0-rc.1';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';

/** The value (`{ tag, val }`) of the argument `name`, or undefined. */
export function arg(msg, name) {
  return msg.args.find((a) => a.name === name)?.value;
}

/**
 * The argument `name` as an address: `{ version: 4 | 6, bits: BigInt }`,
 * or undefined if it is missing or not an ipv4/ipv6 value.
 */
export function ipArg(msg, name) {
  const v = arg(msg, name);
  if (v?.tag === 'ipv4') return { version: 4, bits: joinBits(v.val, 8n) };
  if (v?.tag === 'ipv6') return { version: 6, bits: joinBits(v.val, 16n) };
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
 * The contents of the file at an absolute `path` inside a preopened directory
 * (spoa-host preopens `/data` read-only with `--guest-data`). Throws if there
 * is no such file or it cannot be read.
 */
export function readFile(path) {
  for (const [dir, mount] of getDirectories()) {
    const prefix = mount.endsWith('/') ? mount : mount + '/';
    if (!path.startsWith(prefix)) continue;
    const file = dir.openAt({ symlinkFollow: true }, path.slice(prefix.length), {}, { read: true });
    const chunks = [];
    let offset = 0n;
    for (;;) {
      const [bytes, end] = file.read(65536n, offset);
      chunks.push(bytes);
      offset += BigInt(bytes.length);
      if (end || bytes.length === 0) break;
    }
    const all = new Uint8Array(Number(offset));
    let at = 0;
    for (const c of chunks) {
      all.set(c, at);
      at += c.length;
    }
    return new TextDecoder().decode(all);
  }
  throw new Error(`${path}: not in a preopened directory`);
}
