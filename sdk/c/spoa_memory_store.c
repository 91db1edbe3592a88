/* An in-memory spoa_store_t for native unit tests (see spoa_store.h). A
 * linear table: tests hold a few keys. */
#include "spoa_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *key;
    uint8_t *value;
    size_t len;
    bool expires;
    uint64_t expiry;
} entry_t;

typedef struct {
    entry_t *entries;
    size_t count, capacity;
    uint64_t now;
    bool down;
} memory_t;

/* The host's limits, so a test passes only what the agent would accept. */
#define MAX_KEY_BYTES 1024
#define MAX_VALUE_BYTES (1u << 20)
#define MAX_TTL_MS ((UINT64_C(1) << 53) - 1)

static bool allowed(const char *key, size_t len, bool timed, uint64_t ms) {
    return strlen(key) <= MAX_KEY_BYTES && len <= MAX_VALUE_BYTES && (!timed || (ms >= 1 && ms <= MAX_TTL_MS));
}

static void drop_at(memory_t *m, size_t i) {
    free(m->entries[i].key);
    free(m->entries[i].value);
    m->entries[i] = m->entries[--m->count];
}

static bool up(memory_t *m) {
    if (m->down) return false;
    for (size_t i = 0; i < m->count;) {
        if (m->entries[i].expires && m->entries[i].expiry <= m->now) drop_at(m, i);
        else i++;
    }
    return true;
}

static entry_t *lookup(memory_t *m, const char *key) {
    for (size_t i = 0; i < m->count; i++)
        if (strcmp(m->entries[i].key, key) == 0) return &m->entries[i];
    return NULL;
}

static entry_t *put(memory_t *m, const char *key, const uint8_t *value, size_t len) {
    entry_t *e = lookup(m, key);
    if (e == NULL) {
        if (m->count == m->capacity) {
            size_t capacity = m->capacity ? m->capacity * 2 : 8;
            entry_t *grown = realloc(m->entries, capacity * sizeof *grown);
            if (grown == NULL) return NULL;
            m->entries = grown;
            m->capacity = capacity;
        }
        e = &m->entries[m->count++];
        e->key = strdup(key);
        e->value = NULL;
    }
    free(e->value);
    e->value = malloc(len ? len : 1);
    if (len) memcpy(e->value, value, len);
    e->len = len;
    e->expires = false;
    return e;
}

static bool m_get(void *self, const char *key, uint8_t **value, size_t *len, bool *found) {
    memory_t *m = self;
    if (!up(m)) return false;
    entry_t *e = lookup(m, key);
    *found = e != NULL;
    if (e) {
        *value = malloc(e->len ? e->len : 1);
        memcpy(*value, e->value, e->len);
        *len = e->len;
    }
    return true;
}

static bool m_set(void *self, const char *key, const uint8_t *value, size_t len) {
    memory_t *m = self;
    return allowed(key, len, false, 0) && up(m) && put(m, key, value, len) != NULL;
}

static bool m_set_with_ttl(void *self, const char *key, const uint8_t *value, size_t len, uint64_t ttl_ms) {
    memory_t *m = self;
    if (!allowed(key, len, true, ttl_ms) || !up(m)) return false;
    entry_t *e = put(m, key, value, len);
    if (e == NULL) return false;
    e->expires = true;
    e->expiry = m->now + ttl_ms;
    return true;
}

static bool m_remove(void *self, const char *key) {
    memory_t *m = self;
    if (!up(m)) return false;
    entry_t *e = lookup(m, key);
    if (e) drop_at(m, (size_t)(e - m->entries));
    return true;
}

static bool m_exists(void *self, const char *key, bool *exists) {
    memory_t *m = self;
    if (!up(m)) return false;
    *exists = lookup(m, key) != NULL;
    return true;
}

/* A counter is canonical decimal text: "0", or digits without a leading zero. */
static bool counter(const entry_t *e, uint64_t *n) {
    if (e->len == 0 || e->len > 19 || (e->value[0] == '0' && e->len > 1)) return false;
    uint64_t value = 0;
    for (size_t i = 0; i < e->len; i++) {
        if (e->value[i] < '0' || e->value[i] > '9') return false;
        value = value * 10 + (uint64_t)(e->value[i] - '0');
    }
    if (value > (uint64_t)INT64_MAX) return false;
    *n = value;
    return true;
}

static bool m_increment_within(void *self, const char *key, uint64_t delta, uint64_t window_ms, uint64_t *value) {
    memory_t *m = self;
    if (!allowed(key, 0, true, window_ms) || !up(m)) return false;
    entry_t *e = lookup(m, key);
    uint64_t current = 0;
    bool expires = false;
    uint64_t expiry = 0;
    if (e) {
        if (!counter(e, &current)) return false;
        expires = e->expires;
        expiry = e->expiry;
    }
    if (delta > (uint64_t)INT64_MAX - current) return false;
    char text[24];
    int len = snprintf(text, sizeof text, "%llu", (unsigned long long)(current + delta));
    e = put(m, key, (const uint8_t *)text, (size_t)len);
    if (e == NULL) return false;
    e->expires = true;
    e->expiry = expires ? expiry : m->now + window_ms;
    *value = current + delta;
    return true;
}

static bool m_expires_in(void *self, const char *key, uint64_t *ms, bool *has_expiry) {
    memory_t *m = self;
    if (!up(m)) return false;
    entry_t *e = lookup(m, key);
    *has_expiry = e != NULL && e->expires;
    if (*has_expiry) *ms = e->expiry - m->now;
    return true;
}

static const spoa_store_ops_t memory_ops = {
    m_get, m_set, m_set_with_ttl, m_remove, m_exists, m_increment_within, m_expires_in,
};

spoa_store_t spoa_memory_store_new(void) {
    return (spoa_store_t){&memory_ops, calloc(1, sizeof(memory_t))};
}

void spoa_memory_store_free(spoa_store_t store) {
    memory_t *m = store.self;
    while (m->count) drop_at(m, 0);
    free(m->entries);
    free(m);
}

void spoa_memory_store_advance(spoa_store_t store, uint64_t ms) { ((memory_t *)store.self)->now += ms; }

void spoa_memory_store_set_down(spoa_store_t store, bool down) { ((memory_t *)store.self)->down = down; }
