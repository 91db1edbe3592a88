// IP reputation: `check-client-ip` (argument `ip`) sets `sess.ip_score` (0
// for an address in the IP table `blocklist`, else random 0..=100 from the
// host) and `txn.ip_blocked` (the score below `threshold`, default 20).
import * as spoa from 'spoa-guest';

// Per instance, prepared once in `init`.
let threshold = 20;
let blocklist;

export function init() {
  const text = spoa.config('threshold', '20').trim();
  if (!/^[+-]?[0-9]+$/.test(text)) throw `threshold is not an integer: ${text}`;
  threshold = Number(text);
  blocklist = spoa.openTable('blocklist');
}

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
