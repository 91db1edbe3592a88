// HAProxy's binary header list (`req.hdrs_bin`, `res.hdrs_bin`), as a
// WAF-style guest receives it (`args hdrs=req.hdrs_bin`): for each header
// its name then its value, each a length (a SPOP varint) and that many
// bytes; the list ends with an empty name and an empty value. Plain
// JavaScript: works in the guest and under Node.js in unit tests.

export class HeadersError extends Error {}

function varint(bytes, pos) {
  if (pos >= bytes.length) throw new HeadersError('header list truncated');
  let value = BigInt(bytes[pos++]);
  if (value < 240n) return [value, pos];
  let shift = 4n;
  for (;;) {
    if (pos >= bytes.length) throw new HeadersError('header list truncated');
    const byte = bytes[pos++];
    value += BigInt(byte) << shift;
    if (byte < 128) break;
    shift += 7n;
    if (shift > 60n) throw new HeadersError('header list has a bad length');
  }
  if (value >= 1n << 64n) throw new HeadersError('header list has a bad length');
  return [value, pos];
}

function field(bytes, pos) {
  const [length, at] = varint(bytes, pos);
  if (length > BigInt(bytes.length - at)) throw new HeadersError('header list truncated');
  const end = at + Number(length);
  return [bytes.subarray(at, end), end];
}

/**
 * The headers of the list `bytes` (a Uint8Array, as a `binary` argument
 * arrives), in order, as `{ name, value }` Uint8Arrays. Bytes after the end
 * marker are ignored; a broken list throws HeadersError.
 */
export function parse(bytes) {
  const headers = [];
  let pos = 0;
  for (;;) {
    if (pos >= bytes.length) throw new HeadersError('header list has no end marker');
    let name, value;
    [name, pos] = field(bytes, pos);
    [value, pos] = field(bytes, pos);
    if (name.length === 0 && value.length === 0) return headers;
    headers.push({ name, value });
  }
}

const decoder = new TextDecoder();

/** The value (text) of the first header called `name`, without case, or undefined. */
export function find(headers, name) {
  const wanted = name.toLowerCase();
  const hit = headers.find((h) => decoder.decode(h.name).toLowerCase() === wanted);
  return hit === undefined ? undefined : decoder.decode(hit.value);
}
