"""IP reputation: answers `check-client-ip` with a score for the address in
the argument `ip` (0 if it is in the block list, else random 0..=100) and
whether that score is below the configured threshold."""

import ipaddress
import re

import spoa
import wit_world

_blocklist = None  # the networks, read on the first call and kept by this instance


def _load_blocklist(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        spoa.log("warn", f"blocklist {path} not read ({e}): empty block list")
        text = ""
    networks = []
    for i, line in enumerate(text.split("\n"), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            spoa.log("warn", f"{path}:{i}: not a CIDR: {entry}")
    spoa.log("info", f"blocklist {path}: {len(networks)} networks")
    return networks


class WitWorld(wit_world.WitWorld):
    def handle_message(self, msg: spoa.Message) -> list[spoa.Action]:
        global _blocklist
        if msg.name != "check-client-ip":
            return []
        threshold = spoa.config("threshold", "20").strip()
        if not re.fullmatch(r"[+-]?[0-9]+", threshold):
            raise spoa.Err(f"threshold is not an integer: {threshold}")
        if _blocklist is None:
            _blocklist = _load_blocklist(spoa.config("blocklist", "/data/blocklist.txt"))

        ip = spoa.ip_arg(msg, "ip")
        if ip is None:
            raise spoa.Err("check-client-ip: argument ip is missing or not an address")
        addr = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:a.b.c.d counts as IPv4
        score = 0 if any(addr in net for net in _blocklist) else spoa.random_below(101)
        return [
            spoa.set_var("sess", "ip_score", spoa.int32(score)),
            spoa.set_var("txn", "ip_blocked", spoa.boolean(score < int(threshold))),
        ]
