/* The C SDK's host side: the component's exports around the guest's
 * spoa_init and spoa_handle, and the helpers of spoa.h. Ownership follows
 * the canonical ABI as wit-bindgen's C bindings state it: an export owns
 * its arguments (freed here after the guest's call) and hands its results
 * to the host (freed by the generated post-return functions, so every name
 * and string in an action is a malloc'd copy); an import borrows its
 * arguments (freed here after the call). */
#include "spoa.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static handler_with_batch_string_t borrowed(const char *text) {
    return (handler_with_batch_string_t){(uint8_t *)text, strlen(text)};
}

bool spoa_fail(char **error, const char *reason) {
    *error = strdup(reason);
    return false;
}

__attribute__((weak)) bool spoa_init(char **error) {
    (void)error;
    return true;
}

static void free_actions(spoa_actions_t *out) {
    handler_with_batch_list_action_free(&out->list);
    out->capacity = 0;
}

static void error_string(char *error, handler_with_batch_string_t *err) {
    handler_with_batch_string_dup(err, error != NULL ? error : "the guest failed without a reason");
    free(error);
}

bool exports_handler_with_batch_init(handler_with_batch_string_t *err) {
    char *error = NULL;
    if (spoa_init(&error)) return true;
    error_string(error, err);
    return false;
}

bool exports_handler_with_batch_handle_message(handler_with_batch_message_t *msg,
                                               handler_with_batch_list_action_t *ret,
                                               handler_with_batch_string_t *err) {
    spoa_actions_t out = {{NULL, 0}, 0};
    char *error = NULL;
    bool ok = spoa_handle(msg, &out, &error);
    handler_with_batch_message_free(msg);
    if (ok) {
        *ret = out.list;
        return true;
    }
    free_actions(&out);
    error_string(error, err);
    return false;
}

/* One entry per batch: each answer goes to the host as soon as it is ready;
 * `false` from the host means the batch had its share of the thread (the
 * host enters again with the messages left). */
void exports_handler_with_batch_handle_messages(handler_with_batch_list_batch_message_t *msgs) {
    for (size_t i = 0; i < msgs->len; i++) {
        spoa_actions_t out = {{NULL, 0}, 0};
        char *error = NULL;
        spoa_agent_batch_result_list_action_string_t answer;
        answer.is_err = !spoa_handle(&msgs->ptr[i], &out, &error);
        if (answer.is_err) {
            free_actions(&out);
            error_string(error, &answer.val.err);
        } else {
            answer.val.ok = (spoa_agent_batch_list_action_t){out.list.ptr, out.list.len};
        }
        bool go_on = spoa_agent_batch_answer((uint32_t)i, &answer);
        spoa_agent_batch_result_list_action_string_free(&answer);
        if (!go_on) break;
    }
    handler_with_batch_list_batch_message_free(msgs);
}

static bool same(const handler_with_batch_string_t *text, const char *name) {
    size_t len = strlen(name);
    return text->len == len && memcmp(text->ptr, name, len) == 0;
}

bool spoa_message_is(const spoa_message_t *msg, const char *name) { return same(&msg->name, name); }

const spoa_typed_data_t *spoa_arg(const spoa_message_t *msg, const char *name) {
    for (size_t i = 0; i < msg->args.len; i++)
        if (same(&msg->args.ptr[i].name, name)) return &msg->args.ptr[i].value;
    return NULL;
}

bool spoa_ip_arg(const spoa_message_t *msg, const char *name, spoa_ip_t *ip) {
    const spoa_typed_data_t *value = spoa_arg(msg, name);
    if (value == NULL) return false;
    if (value->tag == SPOA_AGENT_TYPES_TYPED_DATA_IPV4) {
        ip->tag = SPOA_AGENT_IP_TABLE_IP_ADDRESS_IPV4;
        ip->val.ipv4 = value->val.ipv4;
        return true;
    }
    if (value->tag == SPOA_AGENT_TYPES_TYPED_DATA_IPV6) {
        ip->tag = SPOA_AGENT_IP_TABLE_IP_ADDRESS_IPV6;
        ip->val.ipv6 = value->val.ipv6;
        return true;
    }
    return false;
}

bool spoa_int_arg(const spoa_message_t *msg, const char *name, int64_t *out) {
    const spoa_typed_data_t *value = spoa_arg(msg, name);
    if (value == NULL) return false;
    switch (value->tag) {
    case SPOA_AGENT_TYPES_TYPED_DATA_INT32: *out = value->val.int32; return true;
    case SPOA_AGENT_TYPES_TYPED_DATA_UINT32: *out = value->val.uint32; return true;
    case SPOA_AGENT_TYPES_TYPED_DATA_INT64: *out = value->val.int64; return true;
    case SPOA_AGENT_TYPES_TYPED_DATA_UINT64:
        if (value->val.uint64 > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)value->val.uint64;
        return true;
    default: return false;
    }
}

bool spoa_bytes_arg(const spoa_message_t *msg, const char *name, const uint8_t **bytes, size_t *len) {
    const spoa_typed_data_t *value = spoa_arg(msg, name);
    if (value == NULL) return false;
    if (value->tag == SPOA_AGENT_TYPES_TYPED_DATA_STRING) {
        *bytes = value->val.string.ptr;
        *len = value->val.string.len;
        return true;
    }
    if (value->tag == SPOA_AGENT_TYPES_TYPED_DATA_BINARY) {
        *bytes = value->val.binary.ptr;
        *len = value->val.binary.len;
        return true;
    }
    return false;
}

static spoa_agent_types_action_t *push(spoa_actions_t *out) {
    if (out->list.len == out->capacity) {
        size_t capacity = out->capacity ? out->capacity * 2 : 4;
        spoa_agent_types_action_t *grown = realloc(out->list.ptr, capacity * sizeof *grown);
        if (grown == NULL) abort();
        out->list.ptr = grown;
        out->capacity = capacity;
    }
    return &out->list.ptr[out->list.len++];
}

static void set(spoa_actions_t *out, spoa_scope_t scope, const char *name, spoa_typed_data_t value) {
    spoa_agent_types_action_t *action = push(out);
    action->tag = SPOA_AGENT_TYPES_ACTION_SET_VAR;
    action->val.set_var.scope = scope;
    handler_with_batch_string_dup(&action->val.set_var.name, name);
    action->val.set_var.value = value;
}

void spoa_set_int32(spoa_actions_t *out, spoa_scope_t scope, const char *name, int32_t value) {
    spoa_typed_data_t data = {.tag = SPOA_AGENT_TYPES_TYPED_DATA_INT32, .val.int32 = value};
    set(out, scope, name, data);
}

void spoa_set_int64(spoa_actions_t *out, spoa_scope_t scope, const char *name, int64_t value) {
    spoa_typed_data_t data = {.tag = SPOA_AGENT_TYPES_TYPED_DATA_INT64, .val.int64 = value};
    set(out, scope, name, data);
}

void spoa_set_bool(spoa_actions_t *out, spoa_scope_t scope, const char *name, bool value) {
    spoa_typed_data_t data = {.tag = SPOA_AGENT_TYPES_TYPED_DATA_BOOLEAN, .val.boolean = value};
    set(out, scope, name, data);
}

void spoa_set_string(spoa_actions_t *out, spoa_scope_t scope, const char *name, const char *value) {
    spoa_typed_data_t data = {.tag = SPOA_AGENT_TYPES_TYPED_DATA_STRING};
    size_t len = strlen(value);
    data.val.string.ptr = malloc(len ? len : 1);
    if (data.val.string.ptr == NULL) abort();
    memcpy(data.val.string.ptr, value, len);
    data.val.string.len = len;
    set(out, scope, name, data);
}

void spoa_unset(spoa_actions_t *out, spoa_scope_t scope, const char *name) {
    spoa_agent_types_action_t *action = push(out);
    action->tag = SPOA_AGENT_TYPES_ACTION_UNSET_VAR;
    action->val.unset_var.scope = scope;
    handler_with_batch_string_dup(&action->val.unset_var.name, name);
}

/* 1 and *text (malloc'd) when set, 0 when absent, -1 when the host's
 * configuration source failed. */
static int config_lookup(const char *key, char **text) {
    handler_with_batch_string_t name = borrowed(key);
    handler_with_batch_option_string_t value;
    wasi_config_store_error_t error;
    if (!wasi_config_store_get(&name, &value, &error)) {
        wasi_config_store_error_free(&error);
        return -1;
    }
    if (!value.is_some) return 0;
    *text = malloc(value.val.len + 1);
    if (*text != NULL) {
        memcpy(*text, value.val.ptr, value.val.len);
        (*text)[value.val.len] = 0;
    }
    handler_with_batch_option_string_free(&value);
    return *text != NULL ? 1 : -1;
}

char *spoa_config(const char *key) {
    char *text = NULL;
    return config_lookup(key, &text) == 1 ? text : NULL;
}

bool spoa_config_int(const char *key, int64_t fallback, int64_t *value) {
    char *text = NULL;
    int found = config_lookup(key, &text);
    if (found < 0) return false;
    if (found == 0) {
        *value = fallback;
        return true;
    }
    char *end = text;
    errno = 0;
    long long parsed = strtoll(text, &end, 10);
    while (*end == ' ' || *end == '\t') end++;
    bool ok = end != text && *end == 0 && errno != ERANGE;
    if (ok) *value = parsed;
    free(text);
    return ok;
}

uint64_t spoa_random_below(uint64_t n) {
    /* Multiply-shift: uniform enough for scores, no division. */
    return (uint64_t)(((__uint128_t)spoa_agent_random_get_random_u64() * n) >> 64);
}

void spoa_log(spoa_level_t level, const char *message) {
    handler_with_batch_string_t text = borrowed(message);
    spoa_agent_log_log((spoa_agent_log_level_t)level, &text);
}

bool spoa_table_open(const char *name, spoa_table_t *table) {
    handler_with_batch_string_t text = borrowed(name);
    spoa_agent_ip_table_error_t error;
    table->open = spoa_agent_ip_table_open(&text, &table->handle, &error);
    return table->open;
}

bool spoa_table_contains(const spoa_table_t *table, const spoa_ip_t *ip) {
    if (table == NULL || !table->open) return false;
    spoa_ip_t address = *ip;
    return spoa_agent_ip_table_method_table_contains(spoa_agent_ip_table_borrow_table(table->handle), &address);
}

bool spoa_increment(const char *name, uint64_t by) {
    handler_with_batch_string_t text = borrowed(name);
    spoa_agent_metrics_counter_error_t error;
    return spoa_agent_metrics_increment(&text, by, &error);
}

bool spoa_count(const char *name) { return spoa_increment(name, 1); }

/* The host store behind spoa_store_t. */
static wasi_keyvalue_store_borrow_bucket_t bucket_of(void *self) {
    return wasi_keyvalue_store_borrow_bucket(*(wasi_keyvalue_store_own_bucket_t *)self);
}

static bool done(bool ok, wasi_keyvalue_store_error_t *error) {
    if (!ok) wasi_keyvalue_store_error_free(error);
    return ok;
}

static bool h_get(void *self, const char *key, uint8_t **value, size_t *len, bool *found) {
    handler_with_batch_string_t name = borrowed(key);
    handler_with_batch_option_list_u8_t got;
    wasi_keyvalue_store_error_t error;
    if (!done(wasi_keyvalue_store_method_bucket_get(bucket_of(self), &name, &got, &error), &error)) return false;
    *found = got.is_some;
    if (got.is_some) {
        *value = got.val.ptr; /* malloc'd by the bindings: the caller frees it */
        *len = got.val.len;
    }
    return true;
}

static bool h_set(void *self, const char *key, const uint8_t *value, size_t len) {
    handler_with_batch_string_t name = borrowed(key);
    handler_with_batch_list_u8_t bytes = {(uint8_t *)value, len};
    wasi_keyvalue_store_error_t error;
    return done(wasi_keyvalue_store_method_bucket_set(bucket_of(self), &name, &bytes, &error), &error);
}

static bool h_set_with_ttl(void *self, const char *key, const uint8_t *value, size_t len, uint64_t ttl_ms) {
    handler_with_batch_string_t name = borrowed(key);
    handler_with_batch_list_u8_t bytes = {(uint8_t *)value, len};
    wasi_keyvalue_store_error_t error;
    return done(spoa_agent_expiry_set_with_ttl(bucket_of(self), &name, &bytes, ttl_ms, &error), &error);
}

static bool h_remove(void *self, const char *key) {
    handler_with_batch_string_t name = borrowed(key);
    wasi_keyvalue_store_error_t error;
    return done(wasi_keyvalue_store_method_bucket_delete(bucket_of(self), &name, &error), &error);
}

static bool h_exists(void *self, const char *key, bool *exists) {
    handler_with_batch_string_t name = borrowed(key);
    wasi_keyvalue_store_error_t error;
    return done(wasi_keyvalue_store_method_bucket_exists(bucket_of(self), &name, exists, &error), &error);
}

static bool h_increment_within(void *self, const char *key, uint64_t delta, uint64_t window_ms, uint64_t *value) {
    handler_with_batch_string_t name = borrowed(key);
    wasi_keyvalue_store_error_t error;
    return done(spoa_agent_expiry_increment_within(bucket_of(self), &name, delta, window_ms, value, &error), &error);
}

static bool h_expires_in(void *self, const char *key, uint64_t *ms, bool *has_expiry) {
    handler_with_batch_string_t name = borrowed(key);
    handler_with_batch_option_u64_t left;
    wasi_keyvalue_store_error_t error;
    if (!done(spoa_agent_expiry_expires_in(bucket_of(self), &name, &left, &error), &error)) return false;
    *has_expiry = left.is_some;
    if (left.is_some) *ms = left.val;
    return true;
}

static const spoa_store_ops_t host_ops = {
    h_get, h_set, h_set_with_ttl, h_remove, h_exists, h_increment_within, h_expires_in,
};

bool spoa_host_store_open(const char *name, spoa_store_t *store) {
    handler_with_batch_string_t text = borrowed(name);
    wasi_keyvalue_store_own_bucket_t *bucket = malloc(sizeof *bucket);
    wasi_keyvalue_store_error_t error;
    if (bucket == NULL || !done(wasi_keyvalue_store_open(&text, bucket, &error), &error)) {
        free(bucket);
        return false;
    }
    *store = (spoa_store_t){&host_ops, bucket};
    return true;
}
