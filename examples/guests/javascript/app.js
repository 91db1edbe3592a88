// IP reputation: answers `check-client-ip` with a score for the address in
// the argument `ip` (0 if the IP table `blocklist` holds it, else random
// 0..=100) and whether that score is below the configured threshold.
import * as spoa from 'spoa-guest';

let threshold = 20;
let blocklist; // the IP table `blocklist`, opened once per instance in init

export function init() {
  const text = spoa.config('threshold', '20').trim();
  if (!/^[+-]?[0-9]+$/.test(text)) throw `threshold is not an integer: ${text}`;
  threshold = Number(text);
  blocklist = spoa.openTable('blocklist');
}

// One entry per batch of messages rather than one per message.
export function handleMessages(msgs) {
  spoa.answerEach(msgs, handleMessage);
}

export function handleMessage(msg) {
  if (msg.name !== 'check-client-ip') return [];
  const ip = spoa.ipArg(msg, 'ip');
  if (!ip) throw 'check-client-ip: argument ip is missing or not an address';
  const score = spoa.contains(blocklist, ip) ? 0 : spoa.randomBelow(101);
  return [
    spoa.setVar('sess', 'ip_score', spoa.int32(score)),
    spoa.setVar('txn', 'ip_blocked', spoa.boolean(score < threshold)),
  ];
}
