// Types of the spoa-guest SDK, in jco's representation of the WIT types: a
// variant is `{ tag, val }`, an enum is its case name, u64 is a BigInt.
export { parse as parseHeaders, find as findHeader, HeadersError } from './headers.js';

export type TypedData =
  | { tag: 'null' }
  | { tag: 'boolean'; val: boolean }
  | { tag: 'int32' | 'uint32'; val: number }
  | { tag: 'int64' | 'uint64'; val: bigint }
  | { tag: 'ipv4'; val: [number, number, number, number] }
  | { tag: 'ipv6'; val: [number, number, number, number, number, number, number, number] }
  | { tag: 'string' | 'binary'; val: Uint8Array };
export interface Arg { name: string; value: TypedData }
export interface Message { name: string; args: Arg[] }
export type Scope = 'proc' | 'sess' | 'txn' | 'req' | 'res';
export type Action =
  | { tag: 'set-var'; val: { scope: Scope; name: string; value: TypedData } }
  | { tag: 'unset-var'; val: { scope: Scope; name: string } };
/** `bits` is computed when read; `parts` (set by `ipArg`) are the address's bytes (IPv4) or 16-bit groups (IPv6). An address built by hand needs only `version` and `bits`. */
export interface Address { version: 4 | 6; readonly bits: bigint; parts?: number[] }
export interface Table {
  contains(ip: unknown): boolean;
  lookupFields(ip: unknown, paths: string[]): unknown;
}
export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';

/** Answers a batch (`handle-messages`) with `handle`, one message at a time. */
export function answerEach(msgs: Message[], handle: (msg: Message) => Action[]): void;
export function arg(msg: Message, name: string): TypedData | undefined;
export function ipArg(msg: Message, name: string): Address | undefined;
export function int32(n: number): TypedData;
export function int64(n: number | bigint): TypedData;
export function boolean(b: boolean): TypedData;
export function string(s: string): TypedData;
export function setVar(scope: Scope, name: string, value: TypedData): Action;
export function unsetVar(scope: Scope, name: string): Action;
export function config(key: string, fallback: string): string;
export function randomBelow(n: number): number;
export function log(level: Level, message: string): void;
export function openTable(name: string): Table | undefined;
export function contains(table: Table | undefined, ip: Address): boolean;
export function textField(table: Table | undefined, ip: Address, path: string): string | undefined;
export function increment(name: string, by?: number | bigint): boolean;
export function count(name: string): void;

export class StoreError extends Error {}
/** The methods a guest's logic needs from a bucket (HostStore, testing.MemoryStore). */
export interface Store {
  get(key: string): Uint8Array | undefined;
  set(key: string, value: Uint8Array): void;
  setWithTtl(key: string, value: Uint8Array, ttlMs: number | bigint): void;
  delete(key: string): void;
  exists(key: string): boolean;
  incrementWithin(key: string, delta: number | bigint, windowMs: number | bigint): bigint;
  expiresIn(key: string): bigint | undefined;
}
/** The agent's store: the bucket `name` ('default' unless others are granted). */
export class HostStore {
  constructor(name?: string);
}
export interface HostStore extends Store {}
