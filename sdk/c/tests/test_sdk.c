/* The C SDK's plain parts, natively (gcc): the header list parser and the
 * store double. With a file argument (hex), also parses a list a real
 * HAProxy sent and prints it as `name: value` lines for the caller
 * (host/tests/guest_sdks.rs) to compare. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spoa_headers.h"
#include "spoa_store.h"

static size_t put_varint(uint8_t *out, uint64_t n) {
    size_t i = 0;
    if (n < 240) { out[i++] = (uint8_t)n; return i; }
    out[i++] = (uint8_t)(n | 0xf0);
    n = (n - 240) >> 4;
    while (n >= 128) { out[i++] = (uint8_t)(n | 0x80); n = (n - 128) >> 7; }
    out[i++] = (uint8_t)n;
    return i;
}

static size_t put(uint8_t *out, const char *name, const char *value, size_t value_len) {
    size_t i = put_varint(out, strlen(name));
    memcpy(out + i, name, strlen(name)); i += strlen(name);
    i += put_varint(out + i, value_len);
    memcpy(out + i, value, value_len); i += value_len;
    return i;
}

static void headers_parse(void) {
    static uint8_t list[8192];
    static char long_value[5000];
    memset(long_value, 'x', sizeof long_value);
    size_t len = put(list, "host", "example.com", 11);
    len += put(list + len, "X-Long", long_value, sizeof long_value);
    list[len++] = 0; list[len++] = 0;
    spoa_header_t h;
    assert(spoa_headers_find(list, len, "x-long", &h) == 1 && h.value_len == 5000);
    assert(spoa_headers_find(list, len, "HOST", &h) == 1 && h.value_len == 11);
    assert(spoa_headers_find(list, len, "missing", &h) == 0);
    for (size_t cut = 0; cut < len; cut++) assert(spoa_headers_find(list, cut, "missing", &h) == -1);
    const uint8_t bad[] = {0xff, 0xff};
    assert(spoa_headers_find(bad, 2, "a", &h) == -1);
}

static void store_double(void) {
    spoa_store_t s = spoa_memory_store_new();
    uint64_t n, ms;
    bool flag;
    assert(spoa_store_set(s, "plain", (const uint8_t *)"x", 1));
    assert(spoa_store_set_with_ttl(s, "ban", (const uint8_t *)"1", 1, 1000));
    assert(spoa_store_increment_within(s, "n", 2, 500, &n) && n == 2);
    assert(spoa_store_increment_within(s, "n", 3, 9999, &n) && n == 5);
    assert(spoa_store_expires_in(s, "n", &ms, &flag) && flag && ms == 500);
    assert(!spoa_store_increment_within(s, "plain", 1, 10, &n));
    spoa_memory_store_advance(s, 500);
    assert(spoa_store_exists(s, "n", &flag) && !flag);
    spoa_memory_store_advance(s, 500);
    assert(spoa_store_exists(s, "ban", &flag) && !flag);
    assert(!spoa_store_set_with_ttl(s, "k", (const uint8_t *)"v", 1, 0));
    assert(!spoa_store_increment_within(s, "k", 1, UINT64_C(1) << 53, &n));
    spoa_memory_store_set_down(s, true);
    assert(!spoa_store_exists(s, "plain", &flag));
    spoa_memory_store_free(s);
}

static void print_capture(const char *path) {
    FILE *f = fopen(path, "r");
    assert(f);
    static char hex[1 << 16];
    size_t hex_len = fread(hex, 1, sizeof hex - 1, f);
    fclose(f);
    static uint8_t bytes[1 << 15];
    size_t len = 0;
    for (size_t i = 0; i + 1 < hex_len && hex[i] != '\n'; i += 2) {
        unsigned byte;
        sscanf(hex + i, "%2x", &byte);
        bytes[len++] = (uint8_t)byte;
    }
    spoa_headers_iter_t it;
    spoa_headers_begin(&it, bytes, len);
    spoa_header_t h;
    int got;
    while ((got = spoa_headers_next(&it, &h)) == 1)
        printf("%.*s: %.*s\n", (int)h.name_len, (const char *)h.name, (int)h.value_len, (const char *)h.value);
    assert(got == 0);
}

int main(int argc, char **argv) {
    headers_parse();
    store_double();
    if (argc > 1) print_capture(argv[1]);
    else puts("ok");
    return 0;
}
