//! HAProxy's binary header list, `req.hdrs_bin` / `res.hdrs_bin`, as
//! WAF-style guests receive it (`args hdrs=req.hdrs_bin`).
//!
//! The format: for each header, its name and its value, each a length as a
//! SPOP varint followed by that many bytes; the list ends with an empty name
//! and an empty value (two zero bytes). Names come as HAProxy holds them
//! (lowercase on HTTP/2 and HTTP/3, as sent on HTTP/1). Plain Rust: parse
//! natively in unit tests too.

/// One header: its name and value, borrowed from the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl Header<'_> {
    /// Whether this header is `name`, compared without case.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value as text, with bytes that are not UTF-8 replaced.
    pub fn value_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.value)
    }
}

/// Why a header list did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersError {
    /// A length or the bytes it announces run past the end.
    Truncated,
    /// A length is not a valid varint (or is larger than the list).
    BadLength,
    /// The list has no end marker (two empty fields).
    Unterminated,
}

impl std::fmt::Display for HeadersError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeadersError::Truncated => "header list truncated",
            HeadersError::BadLength => "header list has a bad length",
            HeadersError::Unterminated => "header list has no end marker",
        })
    }
}

impl std::error::Error for HeadersError {}

/// Parses a whole header list. Bytes after the end marker are ignored.
pub fn parse(bytes: &[u8]) -> Result<Vec<Header<'_>>, HeadersError> {
    let mut headers = Vec::new();
    let mut rest = bytes;
    loop {
        if rest.is_empty() {
            return Err(HeadersError::Unterminated);
        }
        let name = field(&mut rest)?;
        let value = field(&mut rest)?;
        if name.is_empty() && value.is_empty() {
            return Ok(headers);
        }
        headers.push(Header { name, value });
    }
}

/// The value of the first header called `name` (without case), if any.
pub fn find<'a>(headers: &[Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.is(name)).map(|h| h.value)
}

fn field<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], HeadersError> {
    let len = varint(rest)?;
    let len = usize::try_from(len).map_err(|_| HeadersError::BadLength)?;
    if len > rest.len() {
        return Err(HeadersError::Truncated);
    }
    let (bytes, after) = rest.split_at(len);
    *rest = after;
    Ok(bytes)
}

/// SPOP's varint: a byte below 240 is itself; otherwise each following
/// byte adds itself shifted 7 bits further (from 4), until one below 128.
fn varint(rest: &mut &[u8]) -> Result<u64, HeadersError> {
    let (&first, mut tail) = rest.split_first().ok_or(HeadersError::Truncated)?;
    let mut value = u128::from(first);
    if first >= 240 {
        let mut shift = 4u32;
        loop {
            let (&byte, after) = tail.split_first().ok_or(HeadersError::Truncated)?;
            tail = after;
            value += u128::from(byte) << shift;
            if byte < 128 {
                break;
            }
            shift += 7;
            // A u64 takes at most 10 bytes.
            if shift > 4 + 7 * 8 {
                return Err(HeadersError::BadLength);
            }
        }
    }
    *rest = tail;
    u64::try_from(value).map_err(|_| HeadersError::BadLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_varint(mut n: u64, out: &mut Vec<u8>) {
        if n < 240 {
            out.push(n as u8);
            return;
        }
        out.push((n as u8) | 0xf0);
        n = (n - 240) >> 4;
        while n >= 128 {
            out.push((n as u8) | 0x80);
            n = (n - 128) >> 7;
        }
        out.push(n as u8);
    }

    fn encode(headers: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in headers {
            encode_varint(name.len() as u64, &mut out);
            out.extend_from_slice(name);
            encode_varint(value.len() as u64, &mut out);
            out.extend_from_slice(value);
        }
        out.extend_from_slice(&[0, 0]);
        out
    }

    #[test]
    fn a_list_parses_in_order_with_long_values() {
        let long = vec![b'x'; 5000];
        let bytes = encode(&[
            (b"host", b"example.com"),
            (b"X-Long", &long),
            (b"empty", b""),
        ]);
        let headers = parse(&bytes).unwrap();
        assert_eq!(headers.len(), 3);
        assert_eq!(headers[0].name, b"host");
        assert_eq!(find(&headers, "x-long").map(<[u8]>::len), Some(5000));
        assert_eq!(find(&headers, "EMPTY"), Some(&b""[..]));
        assert_eq!(find(&headers, "missing"), None);
    }

    #[test]
    fn broken_lists_are_errors_not_panics() {
        assert_eq!(parse(b""), Err(HeadersError::Unterminated));
        assert_eq!(parse(&[4, b'h', b'o']), Err(HeadersError::Truncated));
        assert_eq!(parse(&[1, b'a', 1, b'b']), Err(HeadersError::Unterminated));
        assert_eq!(parse(&[0xff, 0xff]), Err(HeadersError::Truncated));
        assert_eq!(parse(&[0, 0]), Ok(vec![]));
        // Every prefix of a good list, and every byte flipped, parses or errs.
        let good = encode(&[(b"a", b"b"), (b"cookie", &[b'c'; 300])]);
        for cut in 0..good.len() {
            let _ = parse(&good[..cut]);
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = parse(&bad);
        }
    }
}
