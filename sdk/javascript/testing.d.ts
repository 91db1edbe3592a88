import type { Store } from './index.js';
export class StoreError extends Error {}
/** An in-memory Store for unit tests, on a clock the test moves. */
export class MemoryStore {
  /** Moves the store's clock on by `ms` milliseconds. */
  advance(ms: number): void;
  /** While down, every call throws StoreError. */
  setDown(down: boolean): void;
  keys(): string[];
}
export interface MemoryStore extends Store {}
