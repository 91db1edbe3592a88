// The JavaScript SDK's pure parts under Node.js (`node --test`): the header
// list parser and the store double. HDRS_BIN (a hex file) adds a list a
// real HAProxy sent (host/tests/guest_sdks.rs), checked against HDRS_EXPECT.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { parse, find, HeadersError } from '../headers.js';
import { MemoryStore, StoreError } from '../testing.js';

function varint(n) {
  if (n < 240) return [n];
  const out = [(n & 0xff) | 0xf0];
  n = (n - 240) >> 4;
  while (n >= 128) {
    out.push((n & 0xff) | 0x80);
    n = (n - 128) >> 7;
  }
  out.push(n);
  return out;
}

function encode(pairs) {
  const bytes = [];
  for (const [k, v] of pairs) {
    const key = new TextEncoder().encode(k);
    const value = new TextEncoder().encode(v);
    bytes.push(...varint(key.length), ...key, ...varint(value.length), ...value);
  }
  return Uint8Array.from([...bytes, 0, 0]);
}

test('a list parses in order with long values', () => {
  const headers = parse(encode([['host', 'example.com'], ['X-Long', 'x'.repeat(5000)], ['empty', '']]));
  assert.equal(headers.length, 3);
  assert.equal(find(headers, 'x-long').length, 5000);
  assert.equal(find(headers, 'EMPTY'), '');
  assert.equal(find(headers, 'missing'), undefined);
});

test('broken lists throw', () => {
  for (const bad of [[], [4, 104, 111], [1, 97, 1, 98], [0xff, 0xff]]) {
    assert.throws(() => parse(Uint8Array.from(bad)), HeadersError);
  }
  const good = encode([['a', 'b'], ['cookie', 'c'.repeat(300)]]);
  for (let cut = 0; cut < good.length; cut++) {
    assert.throws(() => parse(good.subarray(0, cut)), HeadersError);
  }
});

test('a list from HAProxy', { skip: !process.env.HDRS_BIN }, () => {
  const hex = readFileSync(process.env.HDRS_BIN, 'utf8').trim();
  const bytes = Uint8Array.from(hex.match(/../g).map((h) => parseInt(h, 16)));
  const latin1 = new TextDecoder('latin1');
  const parsed = parse(bytes).map((h) => [latin1.decode(h.name), latin1.decode(h.value)]);
  assert.deepEqual(parsed, JSON.parse(readFileSync(process.env.HDRS_EXPECT, 'utf8')));
});

test('the store double keeps the host semantics', () => {
  const store = new MemoryStore();
  store.set('plain', new TextEncoder().encode('x'));
  store.setWithTtl('ban', new TextEncoder().encode('1'), 1000);
  assert.equal(store.incrementWithin('n', 2, 500), 2n);
  assert.equal(store.incrementWithin('n', 3, 9999), 5n);
  assert.equal(store.expiresIn('n'), 500n);
  assert.throws(() => store.incrementWithin('plain', 1, 10), StoreError);
  store.advance(500);
  assert.equal(store.get('n'), undefined);
  assert.equal(store.incrementWithin('n', 1, 100), 1n);
  store.advance(500);
  assert.equal(store.exists('ban'), false);
  assert.deepEqual(store.keys(), ['plain']);
  assert.throws(() => store.setWithTtl('k', new Uint8Array(1), 0), StoreError);
  assert.throws(() => store.incrementWithin('k', -1, 10), StoreError);
  assert.throws(() => store.set('k'.repeat(1025), new Uint8Array(1)), StoreError);
  store.setDown(true);
  assert.throws(() => store.get('plain'), StoreError);
});
