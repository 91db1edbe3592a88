/* IP reputation: `check-client-ip` (argument `ip`) sets `sess.ip_score` (0
 * for an address in the IP table `blocklist`, else random 0..=100 from the
 * host) and `txn.ip_blocked` (the score below `threshold`, default 20). */
#include "spoa.h"

/* Per instance, prepared once in spoa_init. */
static int64_t threshold = 20;
static spoa_table_t blocklist;

bool spoa_init(char **error) {
    if (!spoa_config_int("threshold", 20, &threshold))
        return spoa_fail(error, "threshold is not an integer");
    spoa_table_open("blocklist", &blocklist); /* not granted: no block list */
    return true;
}

bool spoa_handle(const spoa_message_t *msg, spoa_actions_t *out, char **error) {
    if (!spoa_message_is(msg, "check-client-ip")) return true;
    spoa_ip_t ip;
    if (!spoa_ip_arg(msg, "ip", &ip))
        return spoa_fail(error, "check-client-ip: argument ip is missing or not an address");
    int32_t score = spoa_table_contains(&blocklist, &ip) ? 0 : (int32_t)spoa_random_below(101);
    spoa_set_int32(out, SPOA_SESS, "ip_score", score);
    spoa_set_bool(out, SPOA_TXN, "ip_blocked", score < threshold);
    return true;
}
