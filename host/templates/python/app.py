"""IP reputation: `check-client-ip` (argument `ip`) sets `sess.ip_score` (0
for an address in the IP table `blocklist`, else random 0..=100 from the
host) and `txn.ip_blocked` (the score below `threshold`, default 20)."""

import spoa
import wit_world

# Per instance, prepared once in `init`.
_threshold = 20
_blocklist = None


class WitWorld(spoa.Batches, wit_world.WitWorld):
    def init(self) -> None:
        global _threshold, _blocklist
        text = spoa.config("threshold", "20").strip()
        try:
            _threshold = int(text)
        except ValueError:
            raise spoa.Err(f"threshold is not an integer: {text}")
        _blocklist = spoa.open_table("blocklist")

    def handle_message(self, msg: spoa.Message) -> list[spoa.Action]:
        if msg.name != "check-client-ip":
            return []
        ip = spoa.ip_arg(msg, "ip")
        if ip is None:
            raise spoa.Err("check-client-ip: argument ip is missing or not an address")
        score = 0 if spoa.contains(_blocklist, ip) else spoa.random_below(101)
        return [
            spoa.set_var("sess", "ip_score", spoa.int32(score)),
            spoa.set_var("txn", "ip_blocked", spoa.boolean(score < _threshold)),
        ]
