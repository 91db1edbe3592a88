export class HeadersError extends Error {}
export interface Header {
  name: Uint8Array;
  value: Uint8Array;
}
/** Parses HAProxy's `req.hdrs_bin`; throws HeadersError on a broken list. */
export function parse(bytes: Uint8Array): Header[];
/** The value of the first header called `name` (without case), as text. */
export function find(headers: Header[], name: string): string | undefined;
