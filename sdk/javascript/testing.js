// A store double for unit tests of a guest's logic under Node.js:
// `MemoryStore` has the host's semantics (counters as decimal text, fixed
// windows, expiry) on a clock the test moves, and an outage switch.

export class StoreError extends Error {}

const MAX_COUNTER = (1n << 63n) - 1n;
// The host's limits, so a test passes only what the agent would accept.
const MAX_KEY_BYTES = 1024;
const MAX_VALUE_BYTES = 1 << 20;
const MAX_TTL_MS = 2 ** 53 - 1;

function check(key, value, ms) {
  const keyBytes = new TextEncoder().encode(key).length;
  if (keyBytes > MAX_KEY_BYTES) throw new StoreError(`key of ${keyBytes} bytes is over the limit of ${MAX_KEY_BYTES}`);
  if (value !== undefined && value.length > MAX_VALUE_BYTES) {
    throw new StoreError(`value of ${value.length} bytes is over the limit of ${MAX_VALUE_BYTES}`);
  }
  if (ms !== undefined && !(Number(ms) >= 1 && Number(ms) <= MAX_TTL_MS)) {
    throw new StoreError(`time to live ${ms} ms is out of range 1..=${MAX_TTL_MS}`);
  }
}
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
  set(key, value) { check(key, value); this.#up(); this.#entries.set(key, [Uint8Array.from(value), null]); }
  setWithTtl(key, value, ttlMs) {
    check(key, value, ttlMs);
    this.#up();
    this.#entries.set(key, [Uint8Array.from(value), this.#now + Number(ttlMs)]);
  }
  delete(key) { this.#up(); this.#entries.delete(key); }
  exists(key) { this.#up(); return this.#entries.has(key); }
  incrementWithin(key, delta, windowMs) {
    check(key, undefined, windowMs);
    if (BigInt(delta) < 0n) throw new StoreError(`delta ${delta} is negative (a u64)`);
    this.#up();
    const [value, expiry] = this.#entries.get(key) ?? [new TextEncoder().encode('0'), null];
    const text = new TextDecoder().decode(value);
    if (!COUNTER.test(text) || BigInt(text) > MAX_COUNTER) {
      throw new StoreError(`the value at \`${key}\` is not a counter`);
    }
    const total = BigInt(text) + BigInt(delta);
    if (total > MAX_COUNTER) throw new StoreError(`the counter at \`${key}\` would overflow`);
    const until = expiry ?? this.#now + Number(windowMs);
    this.#entries.set(key, [new TextEncoder().encode(total.toString()), until]);
    return total;
  }
  expiresIn(key) {
    this.#up();
    const entry = this.#entries.get(key);
    return entry === undefined || entry[1] === null ? undefined : BigInt(entry[1] - this.#now);
  }
}
