/* The C SDK of spoa-host guests, over the bindings wit-bindgen's C
 * generator writes for spoa:agent's `handler-with-batch` world
 * (handler_with_batch.h): a guest implements spoa_handle (and, if it
 * prepares anything, spoa_init); spoa.c implements the component's exports
 * (init, handle-message, handle-messages: one entry per batch) around them,
 * and owns every allocation the canonical ABI asks for.
 *
 *     bool spoa_handle(const spoa_message_t *msg, spoa_actions_t *out, char **error) {
 *         if (!spoa_message_is(msg, "check-client-ip")) return true;
 *         spoa_ip_t ip;
 *         if (!spoa_ip_arg(msg, "ip", &ip)) return spoa_fail(error, "no ip");
 *         spoa_set_int32(out, SPOA_SESS, "ip_score", (int32_t)spoa_random_below(101));
 *         return true;
 *     }
 *
 * Per-instance state: prepare it in spoa_init and keep it in static
 * variables (an instance is one thread; a new instance runs init again).
 * spoa_headers.h (req.hdrs_bin) and spoa_store.h's memory double are plain
 * C for native unit tests. */
#ifndef SPOA_H
#define SPOA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "handler_with_batch.h"
#include "spoa_headers.h"
#include "spoa_store.h"

typedef spoa_agent_types_message_t spoa_message_t;
typedef spoa_agent_types_typed_data_t spoa_typed_data_t;
typedef spoa_agent_ip_table_ip_address_t spoa_ip_t;
typedef spoa_agent_types_var_scope_t spoa_scope_t;

#define SPOA_PROC SPOA_AGENT_TYPES_VAR_SCOPE_PROC
#define SPOA_SESS SPOA_AGENT_TYPES_VAR_SCOPE_SESS
#define SPOA_TXN SPOA_AGENT_TYPES_VAR_SCOPE_TXN
#define SPOA_REQ SPOA_AGENT_TYPES_VAR_SCOPE_REQ
#define SPOA_RES SPOA_AGENT_TYPES_VAR_SCOPE_RES

/* The actions answering one message, built with spoa_set_* and spoa_unset. */
typedef struct {
    handler_with_batch_list_action_t list;
    size_t capacity;
} spoa_actions_t;

/* What a guest implements. spoa_init is optional (a weak default does
 * nothing). Return false with *error from spoa_fail to answer `err`. */
bool spoa_init(char **error);
bool spoa_handle(const spoa_message_t *msg, spoa_actions_t *out, char **error);

/* Sets *error to a copy of `reason` and returns false. */
bool spoa_fail(char **error, const char *reason);

/* Arguments. */
bool spoa_message_is(const spoa_message_t *msg, const char *name);
const spoa_typed_data_t *spoa_arg(const spoa_message_t *msg, const char *name);
bool spoa_ip_arg(const spoa_message_t *msg, const char *name, spoa_ip_t *ip);
bool spoa_int_arg(const spoa_message_t *msg, const char *name, int64_t *value);
/* A string or binary argument's bytes (not NUL-terminated). */
bool spoa_bytes_arg(const spoa_message_t *msg, const char *name, const uint8_t **bytes, size_t *len);

/* Actions (names and strings are copied). */
void spoa_set_int32(spoa_actions_t *out, spoa_scope_t scope, const char *name, int32_t value);
void spoa_set_int64(spoa_actions_t *out, spoa_scope_t scope, const char *name, int64_t value);
void spoa_set_bool(spoa_actions_t *out, spoa_scope_t scope, const char *name, bool value);
void spoa_set_string(spoa_actions_t *out, spoa_scope_t scope, const char *name, const char *value);
void spoa_unset(spoa_actions_t *out, spoa_scope_t scope, const char *name);

/* The host: settings, randomness, log. */
/* The setting `key` as a malloc'd string (free it), or NULL (absent, or the
 * host's configuration source failed: spoa_config_int tells them apart). */
char *spoa_config(const char *key);
/* The setting `key` as an integer, `fallback` when absent; false if it is
 * not an integer (or out of range) or the configuration source failed. */
bool spoa_config_int(const char *key, int64_t fallback, int64_t *value);
uint64_t spoa_random_below(uint64_t n);
typedef enum { SPOA_TRACE, SPOA_DEBUG, SPOA_INFO, SPOA_WARN, SPOA_ERROR } spoa_level_t;
void spoa_log(spoa_level_t level, const char *message);

/* IP tables the operator granted (`--ip-table NAME=PATH`). */
typedef struct {
    bool open;
    spoa_agent_ip_table_own_table_t handle;
} spoa_table_t;
bool spoa_table_open(const char *name, spoa_table_t *table);
/* False for a table that is not open. */
bool spoa_table_contains(const spoa_table_t *table, const spoa_ip_t *ip);

/* The agent's store: the bucket `name` ("default" unless others are granted). */
bool spoa_host_store_open(const char *name, spoa_store_t *store);

/* Counters in the agent's metrics (spoa_guest_counter_total{guest,name});
 * false when the operator did not allow the name. */
bool spoa_increment(const char *name, uint64_t by);
bool spoa_count(const char *name);

#endif
