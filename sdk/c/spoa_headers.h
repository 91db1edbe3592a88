/* HAProxy's binary header list (req.hdrs_bin, res.hdrs_bin), as a
 * WAF-style guest receives it (`args hdrs=req.hdrs_bin`): for each header
 * its name then its value, each a length (a SPOP varint) and that many
 * bytes; the list ends with an empty name and an empty value.
 *
 * Plain C, no bindings: it compiles into the guest and into native unit
 * tests alike. Nothing is copied; headers point into the list. */
#ifndef SPOA_HEADERS_H
#define SPOA_HEADERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const uint8_t *name;
    size_t name_len;
    const uint8_t *value;
    size_t value_len;
} spoa_header_t;

typedef struct {
    const uint8_t *pos;
    const uint8_t *end;
} spoa_headers_iter_t;

/* Starts reading the list `bytes` (`len` bytes). */
void spoa_headers_begin(spoa_headers_iter_t *it, const uint8_t *bytes, size_t len);

/* The next header: 1 (in *out), 0 at the end marker, -1 for a broken list
 * (truncated, a bad length, no end marker). */
int spoa_headers_next(spoa_headers_iter_t *it, spoa_header_t *out);

/* Finds the first header called `name` (without case): 1 found (in *out),
 * 0 not there, -1 for a broken list. */
int spoa_headers_find(const uint8_t *bytes, size_t len, const char *name, spoa_header_t *out);

#endif
