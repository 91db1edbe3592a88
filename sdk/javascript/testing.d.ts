import type { Store } from './index.js';
export class StoreError extends Error {}
/** An in-memory Store for unit tests, on a clock the test moves. */
export class MemoryStore implements Store {
  advance(ms: number): void;
  setDown(down: boolean): void;
  keys(): string[];
  get(key: string): Uint8Array | undefined;
  set(key: string, value: Uint8Array): void;
  setWithTtl(key: string, value: Uint8Array, ttlMs: number | bigint): void;
  delete(key: string): void;
  exists(key: string): boolean;
  incrementWithin(key: string, delta: number | bigint, windowMs: number | bigint): bigint;
  expiresIn(key: string): bigint | undefined;
}
