#include "spoa_headers.h"

#include <string.h>

void spoa_headers_begin(spoa_headers_iter_t *it, const uint8_t *bytes, size_t len) {
    it->pos = bytes;
    it->end = bytes + len;
}

/* SPOP's varint: a byte below 240 is itself; otherwise each following byte
 * adds itself shifted 7 bits further (from 4), until one below 128. */
static int varint(spoa_headers_iter_t *it, uint64_t *out) {
    if (it->pos >= it->end) return -1;
    uint64_t value = *it->pos++;
    if (value >= 240) {
        unsigned shift = 4;
        for (;;) {
            if (it->pos >= it->end || shift > 60) return -1;
            uint64_t byte = *it->pos++;
            if (shift > 57 && (byte >> (64 - shift)) != 0) return -1;
            uint64_t add = byte << shift;
            if (value + add < value) return -1;
            value += add;
            if (byte < 128) break;
            shift += 7;
        }
    }
    *out = value;
    return 0;
}

static int field(spoa_headers_iter_t *it, const uint8_t **bytes, size_t *len) {
    uint64_t n;
    if (varint(it, &n) != 0) return -1;
    if (n > (uint64_t)(it->end - it->pos)) return -1;
    *bytes = it->pos;
    *len = (size_t)n;
    it->pos += n;
    return 0;
}

int spoa_headers_next(spoa_headers_iter_t *it, spoa_header_t *out) {
    if (it->pos >= it->end) return -1; /* no end marker */
    if (field(it, &out->name, &out->name_len) != 0) return -1;
    if (field(it, &out->value, &out->value_len) != 0) return -1;
    return (out->name_len == 0 && out->value_len == 0) ? 0 : 1;
}

static bool same_without_case(const uint8_t *a, size_t len, const char *b) {
    if (strlen(b) != len) return false;
    for (size_t i = 0; i < len; i++) {
        uint8_t x = a[i], y = (uint8_t)b[i];
        if (x >= 'A' && x <= 'Z') x += 'a' - 'A';
        if (y >= 'A' && y <= 'Z') y += 'a' - 'A';
        if (x != y) return false;
    }
    return true;
}

int spoa_headers_find(const uint8_t *bytes, size_t len, const char *name, spoa_header_t *out) {
    spoa_headers_iter_t it;
    spoa_headers_begin(&it, bytes, len);
    spoa_header_t header;
    int got;
    while ((got = spoa_headers_next(&it, &header)) == 1) {
        if (same_without_case(header.name, header.name_len, name)) {
            *out = header;
            return 1;
        }
    }
    return got;
}
