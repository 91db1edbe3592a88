/* The shared store as an interface, so a guest's logic runs against the
 * agent's store in the guest (spoa_host_store_open, in spoa.h) and against
 * an in-memory double in native unit tests (spoa_memory_store_new, in
 * spoa_memory_store.c: the host's semantics, a clock the test moves, an
 * outage switch). Plain C. Every call returns false when the store fails
 * (down, out of time, not granted, not a counter): the guest decides what
 * to answer. */
#ifndef SPOA_STORE_H
#define SPOA_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct spoa_store_ops spoa_store_ops_t;

typedef struct {
    const spoa_store_ops_t *ops;
    void *self;
} spoa_store_t;

struct spoa_store_ops {
    /* *found false when absent; the value is malloc'd (free it). */
    bool (*get)(void *self, const char *key, uint8_t **value, size_t *len, bool *found);
    bool (*set)(void *self, const char *key, const uint8_t *value, size_t len);
    bool (*set_with_ttl)(void *self, const char *key, const uint8_t *value, size_t len, uint64_t ttl_ms);
    bool (*remove)(void *self, const char *key);
    bool (*exists)(void *self, const char *key, bool *exists);
    /* Adds delta to the counter at key; a new counter expires window_ms from now. */
    bool (*increment_within)(void *self, const char *key, uint64_t delta, uint64_t window_ms, uint64_t *value);
    /* *has_expiry false when absent or never expiring. */
    bool (*expires_in)(void *self, const char *key, uint64_t *ms, bool *has_expiry);
};

static inline bool spoa_store_get(spoa_store_t s, const char *key, uint8_t **value, size_t *len, bool *found) {
    return s.ops->get(s.self, key, value, len, found);
}
static inline bool spoa_store_set(spoa_store_t s, const char *key, const uint8_t *value, size_t len) {
    return s.ops->set(s.self, key, value, len);
}
static inline bool spoa_store_set_with_ttl(spoa_store_t s, const char *key, const uint8_t *value, size_t len, uint64_t ttl_ms) {
    return s.ops->set_with_ttl(s.self, key, value, len, ttl_ms);
}
static inline bool spoa_store_remove(spoa_store_t s, const char *key) { return s.ops->remove(s.self, key); }
static inline bool spoa_store_exists(spoa_store_t s, const char *key, bool *exists) {
    return s.ops->exists(s.self, key, exists);
}
static inline bool spoa_store_increment_within(spoa_store_t s, const char *key, uint64_t delta, uint64_t window_ms, uint64_t *value) {
    return s.ops->increment_within(s.self, key, delta, window_ms, value);
}
static inline bool spoa_store_expires_in(spoa_store_t s, const char *key, uint64_t *ms, bool *has_expiry) {
    return s.ops->expires_in(s.self, key, ms, has_expiry);
}

/* The in-memory double (spoa_memory_store.c). */
spoa_store_t spoa_memory_store_new(void);
void spoa_memory_store_free(spoa_store_t store);
void spoa_memory_store_advance(spoa_store_t store, uint64_t ms);
void spoa_memory_store_set_down(spoa_store_t store, bool down);

#endif
