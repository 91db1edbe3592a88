// IP reputation: answers `check-client-ip` with a score for the address in
// the argument `ip` (0 if it is in the block list, else random 0..=100) and
// whether that score is below the configured threshold.
import * as spoa from './spoa.js';
import { parseNetwork, contains, unmapped } from './cidr.js';

let blocklist; // the networks, read on the first call and kept by this instance

function loadBlocklist(path) {
  let text = '';
  try {
    text = spoa.readFile(path);
  } catch (e) {
    spoa.log('warn', `blocklist ${path} not read (${e?.payload ?? e}): empty block list`);
  }
  const networks = [];
  text.split('\n').forEach((line, i) => {
    const entry = line.replace(/#.*/, '').trim();
    if (!entry) return;
    const net = parseNetwork(entry);
    if (net) networks.push(net);
    else spoa.log('warn', `${path}:${i + 1}: not a CIDR: ${entry}`);
  });
  spoa.log('info', `blocklist ${path}: ${networks.length} networks`);
  return networks;
}

export function handleMessage(msg) {
  if (msg.name !== 'check-client-ip') return [];
  const threshold = spoa.config('threshold', '20').trim();
  if (!/^[+-]?[0-9]+$/.test(threshold)) throw `threshold is not an integer: ${threshold}`;
  blocklist ??= loadBlocklist(spoa.config('blocklist', '/data/blocklist.txt'));

  const ip = spoa.ipArg(msg, 'ip');
  if (!ip) throw 'check-client-ip: argument ip is missing or not an address';
  const addr = unmapped(ip);
  const score = blocklist.some((net) => contains(net, addr)) ? 0 : spoa.randomBelow(101);
  return [
    spoa.setVar('sess', 'ip_score', spoa.int32(score)),
    spoa.setVar('txn', 'ip_blocked', spoa.boolean(score < Number(threshold))),
  ];
}
