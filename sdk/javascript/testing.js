// A store double for unit tests of a guest's logic under Node.js:
// `MemoryStore` has the host's semantics (counters as decimal text, fixed
// windows, expiry) on a clock the test moves, and an outage switch.

export class StoreError extends Error {}

const MAX_COUNTER = (1n << 63n) - 1n;
const COUNTER = /^(0|[1-9][0-9]*)$/;

export class MemoryStore {
  #entries = new Map();
  #now = 0;
  #down = false;

  /** Moves the store's clock on by `ms` milliseconds. */
  advance(ms) { this.#now += ms; }
  /** While down, every call throws StoreError, as the host's store does when unreachable. */
  setDown(down) { this.#down = !!down; }
  keys() { this.#up(); return [...this.#entries.keys()].sort(); }

  #up() {
    if (this.#down) throw new StoreError('store unavailable');
    for (const [key, [, expiry]] of this.#entries) {
      if (expiry !== null && expiry <= this.#now) this.#entries.delete(key);
    }
  }

  get(key) { this.#up(); return this.#entries.get(key)?.[0]; }
  set(key, value) { this.#up(); this.#entries.set(key, [Uint8Array.from(value), null]); }
  setWithTtl(key, value, ttlMs) {
    this.#up();
    this.#entries.set(key, [Uint8Array.from(value), this.#now + Math.max(Number(ttlMs), 1)]);
  }
  delete(key) { this.#up(); this.#entries.delete(key); }
  exists(key) { this.#up(); return this.#entries.has(key); }
  incrementWithin(key, delta, windowMs) {
    this.#up();
    const [value, expiry] = this.#entries.get(key) ?? [new TextEncoder().encode('0'), null];
    const text = new TextDecoder().decode(value);
    if (!COUNTER.test(text) || BigInt(text) > MAX_COUNTER) {
      throw new StoreError(`the value at \`${key}\` is not a counter`);
    }
    const total = BigInt(text) + BigInt(delta);
    if (total > MAX_COUNTER) throw new StoreError(`the counter at \`${key}\` would overflow`);
    const until = expiry ?? this.#now + Math.max(Number(windowMs), 1);
    this.#entries.set(key, [new TextEncoder().encode(total.toString()), until]);
    return total;
  }
  expiresIn(key) {
    this.#up();
    const entry = this.#entries.get(key);
    return entry === undefined || entry[1] === null ? undefined : BigInt(entry[1] - this.#now);
  }
}
