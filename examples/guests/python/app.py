"""IP reputation: answers `check-client-ip` with a score for the address in
the argument `ip` (0 if the IP table `blocklist` holds it, else random
0..=100) and whether that score is below the configured threshold."""

import re

import spoa
import wit_world

_threshold = 20
_blocklist = None  # the IP table `blocklist`, opened once per instance in init


class WitWorld(spoa.Batches, wit_world.WitWorld):
    def init(self) -> None:
        global _threshold, _blocklist
        threshold = spoa.config("threshold", "20").strip()
        if not re.fullmatch(r"[+-]?[0-9]+", threshold):
            raise spoa.Err(f"threshold is not an integer: {threshold}")
        _threshold = int(threshold)
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
