"""The Python SDK's pure parts under plain CPython: the header list parser
and the store double. HDRS_BIN (a hex file) adds a list a real HAProxy
sent (host/tests/guest_sdks.rs), checked against HDRS_EXPECT (JSON)."""

import json
import os
import unittest

import spoa
from spoa import headers
from spoa.testing import MemoryStore, StoreError


def varint(n: int) -> bytes:
    if n < 240:
        return bytes([n])
    out = [(n & 0xFF) | 0xF0]
    n = (n - 240) >> 4
    while n >= 128:
        out.append((n & 0xFF) | 0x80)
        n = (n - 128) >> 7
    out.append(n)
    return bytes(out)


def encode(pairs):
    data = b"".join(varint(len(k)) + k + varint(len(v)) + v for k, v in pairs)
    return data + b"\x00\x00"


class Headers(unittest.TestCase):
    def test_a_list_parses_in_order_with_long_values(self):
        data = encode([(b"host", b"example.com"), (b"X-Long", b"x" * 5000), (b"empty", b"")])
        parsed = headers.parse(data)
        self.assertEqual([k for k, _ in parsed], [b"host", b"X-Long", b"empty"])
        self.assertEqual(len(headers.find(parsed, "x-long")), 5000)
        self.assertEqual(headers.find(parsed, "EMPTY"), b"")
        self.assertIsNone(headers.find(parsed, "missing"))

    def test_broken_lists_raise(self):
        for bad in [b"", b"\x04ho", b"\x01a\x01b", b"\xff\xff"]:
            with self.assertRaises(headers.HeadersError, msg=bad):
                headers.parse(bad)
        good = encode([(b"a", b"b"), (b"cookie", b"c" * 300)])
        for cut in range(len(good)):
            with self.assertRaises(headers.HeadersError):
                headers.parse(good[:cut])

    @unittest.skipUnless(os.environ.get("HDRS_BIN"), "no HAProxy capture given")
    def test_a_list_from_haproxy(self):
        with open(os.environ["HDRS_BIN"]) as f:
            data = bytes.fromhex(f.read().strip())
        with open(os.environ["HDRS_EXPECT"]) as f:
            expected = json.load(f)
        parsed = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in headers.parse(data)]
        self.assertEqual(parsed, expected)


class Store(unittest.TestCase):
    def test_the_double_keeps_the_hosts_semantics(self):
        store = MemoryStore()
        store.set("plain", b"x")
        store.set_with_ttl("ban", b"1", 1000)
        self.assertEqual(store.increment_within("n", 2, 500), 2)
        self.assertEqual(store.increment_within("n", 3, 9999), 5)
        self.assertEqual(store.expires_in("n"), 500)
        with self.assertRaises(StoreError):
            store.increment_within("plain", 1, 10)
        store.advance(500)
        self.assertIsNone(store.get("n"))
        self.assertEqual(store.increment_within("n", 1, 100), 1)
        store.advance(500)
        self.assertFalse(store.exists("ban"))
        self.assertEqual(store.keys(), ["plain"])
        for refused in [lambda: store.set_with_ttl("k", b"v", 0),
                        lambda: store.increment_within("k", -1, 10),
                        lambda: store.set("k" * 1025, b"v")]:
            with self.assertRaises(StoreError):
                refused()
        store.set_down(True)
        with self.assertRaises(StoreError):
            store.get("plain")

    def test_outside_the_host_the_sdk_says_so(self):
        self.assertFalse(spoa.IN_HOST)
        self.assertEqual(spoa.parse_counter(b"42"), 42)
        self.assertIsNone(spoa.parse_counter(b"042"))


if __name__ == "__main__":
    unittest.main()
