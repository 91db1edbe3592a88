// IP addresses and CIDR networks as BigInts: what Python's `ipaddress` does
// for the Python example. An address is `{ version: 4 | 6, bits: BigInt }`.

/** Parses `192.0.2.0/24`, `2001:db8::/32` or a bare address (/32, /128); null if invalid. */
export function parseNetwork(text) {
  const slash = text.indexOf('/');
  const addr = parseAddress(slash < 0 ? text : text.slice(0, slash));
  if (!addr) return null;
  const width = addr.version === 4 ? 32 : 128;
  let len = width;
  if (slash >= 0) {
    const lenText = text.slice(slash + 1);
    if (!/^[0-9]+$/.test(lenText) || Number(lenText) > width) return null;
    len = Number(lenText);
  }
  const shift = BigInt(width - len);
  // Host bits are ignored, as Python's ip_network(..., strict=False) does.
  return { version: addr.version, shift, prefix: addr.bits >> shift };
}

/** Whether the network contains the address (never across IPv4/IPv6). */
export function contains(net, addr) {
  return net.version === addr.version && addr.bits >> net.shift === net.prefix;
}

/** An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) as IPv4; others unchanged. */
export function unmapped(addr) {
  if (addr.version === 6 && addr.bits >> 32n === 0xffffn) {
    return { version: 4, bits: addr.bits & 0xffffffffn };
  }
  return addr;
}

/** Parses an IPv4 or IPv6 address; null if invalid. */
export function parseAddress(text) {
  if (!text.includes(':')) {
    const bits = parseV4(text);
    return bits === null ? null : { version: 4, bits };
  }
  const bits = parseV6(text);
  return bits === null ? null : { version: 6, bits };
}

function parseV4(text) {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let bits = 0n;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return null;
    bits = (bits << 8n) | BigInt(p);
  }
  return bits;
}

function parseV6(text) {
  let groups = [];
  let head = text;
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) >= 0) {
    // An IPv4 tail (`::ffff:192.0.2.1`) stands for the last two groups.
    const v4 = parseV4(text.slice(lastColon + 1));
    if (v4 === null) return null;
    groups = [Number(v4 >> 16n), Number(v4 & 0xffffn)];
    head = text.slice(0, lastColon);
    if (head.endsWith(':')) head += ':';
  }
  const halves = head.split('::');
  if (halves.length > 2) return null;
  const parse = (half) => (half === '' ? [] : half.split(':'));
  const left = parse(halves[0]);
  const right = halves.length === 2 ? parse(halves[1]) : [];
  for (const g of [...left, ...right]) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
  }
  const given = left.length + right.length + groups.length;
  if (halves.length === 2 ? given > 7 : given !== 8) return null;
  const zeros = Array(8 - given).fill('0');
  const all = [...left, ...zeros, ...right].map((g) => parseInt(g, 16)).concat(groups);
  return all.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}
