//! The text notation of typed data, `TYPE:VALUE`, and of arguments,
//! `NAME=TYPE:VALUE`: what `spoa-host call --arg` and `smoke-args` take, and
//! what recordings write. Every value has exactly one text, and parsing the
//! text gives the value back.
//!
//! `TYPE` is `null` (empty value), `bool`, `int32`, `uint32`, `int64`,
//! `uint64`, `ipv4`, `ipv6`, `str` (UTF-8 text), `strhex` (a string that is
//! not UTF-8, as lowercase hex) or `bin` (lowercase hex).

use super::{Arg, TypedData};

/// Parses `NAME=TYPE:VALUE` (see `spoa-host call --help`).
pub fn parse_typed_arg(text: &str) -> Result<Arg, String> {
    let (name, typed) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=TYPE:VALUE"))?;
    Ok(Arg {
        name: bytes::Bytes::copy_from_slice(name.as_bytes()),
        value: parse_typed_value(typed)?,
    })
}

/// Parses `TYPE:VALUE`.
pub fn parse_typed_value(typed: &str) -> Result<TypedData, String> {
    use TypedData as D;
    let (kind, value) = typed
        .split_once(':')
        .ok_or_else(|| format!("`{typed}` is not TYPE:VALUE"))?;
    let bad = |err: &dyn std::fmt::Display| format!("`{value}` is not a valid {kind}: {err}");
    Ok(match kind {
        "null" => D::Null,
        "bool" => D::Bool(value.parse().map_err(|e| bad(&e))?),
        "int32" => D::Int32(value.parse().map_err(|e| bad(&e))?),
        "uint32" => D::Uint32(value.parse().map_err(|e| bad(&e))?),
        "int64" => D::Int64(value.parse().map_err(|e| bad(&e))?),
        "uint64" => D::Uint64(value.parse().map_err(|e| bad(&e))?),
        "ipv4" => D::Ipv4(value.parse().map_err(|e| bad(&e))?),
        "ipv6" => D::Ipv6(value.parse().map_err(|e| bad(&e))?),
        "str" => D::String(bytes::Bytes::copy_from_slice(value.as_bytes())),
        "bin" => D::Binary(parse_hex(value).map_err(|e| bad(&e))?.into()),
        "strhex" => D::String(parse_hex(value).map_err(|e| bad(&e))?.into()),
        other => {
            return Err(format!(
                "unknown type `{other}` (null, bool, int32, uint32, int64, uint64, ipv4, ipv6, str, strhex, bin)"
            ));
        }
    })
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    hex::decode(text).map_err(|err| match err {
        hex::FromHexError::OddLength => "odd number of hex digits".to_owned(),
        _ => format!("`{text}` is not hex"),
    })
}

/// The text of `value`, `TYPE:VALUE`, which [`parse_typed_value`] reads
/// back as `value`.
pub fn typed_value_text(value: &TypedData) -> String {
    match value {
        TypedData::Null => "null:".to_owned(),
        TypedData::Bool(v) => format!("bool:{v}"),
        TypedData::Int32(v) => format!("int32:{v}"),
        TypedData::Uint32(v) => format!("uint32:{v}"),
        TypedData::Int64(v) => format!("int64:{v}"),
        TypedData::Uint64(v) => format!("uint64:{v}"),
        TypedData::Ipv4(v) => format!("ipv4:{v}"),
        TypedData::Ipv6(v) => format!("ipv6:{v}"),
        TypedData::String(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => format!("str:{text}"),
            Err(_) => format!("strhex:{}", hex::encode(bytes)),
        },
        TypedData::Binary(bytes) => format!("bin:{}", hex::encode(bytes)),
    }
}

/// The text of `arg`, `NAME=TYPE:VALUE` (a name that is not UTF-8 has its
/// bad bytes replaced: SPOE argument names come from HAProxy's
/// configuration, which is text).
pub fn arg_text(arg: &Arg) -> String {
    format!(
        "{}={}",
        String::from_utf8_lossy(&arg.name),
        typed_value_text(&arg.value)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn typed_arguments_cover_every_type() {
        use TypedData as D;
        let cases = [
            ("a=null:", D::Null),
            ("a=bool:true", D::Bool(true)),
            ("a=int32:-5", D::Int32(-5)),
            ("a=uint32:5", D::Uint32(5)),
            ("a=int64:-9000000000", D::Int64(-9_000_000_000)),
            ("a=uint64:18446744073709551615", D::Uint64(u64::MAX)),
            ("a=ipv4:192.0.2.1", D::Ipv4([192, 0, 2, 1].into())),
            (
                "a=ipv6:2001:db8::1",
                D::Ipv6("2001:db8::1".parse().expect("v6")),
            ),
            (
                "a=str:x=y:z",
                D::String(bytes::Bytes::from_static(b"x=y:z")),
            ),
            (
                "a=strhex:ff00",
                D::String(bytes::Bytes::from_static(&[255, 0])),
            ),
            (
                "a=bin:00ff",
                D::Binary(bytes::Bytes::from_static(&[0, 255])),
            ),
        ];
        for (text, value) in cases {
            assert_eq!(
                parse_typed_arg(text).map(|arg| arg.value),
                Ok(value),
                "{text}"
            );
        }
        for bad in [
            "a",
            "a=int32",
            "a=int32:x",
            "a=float:1",
            "a=bin:0",
            "a=ipv4:300.0.0.1",
        ] {
            assert!(parse_typed_arg(bad).is_err(), "{bad}");
        }
    }

    /// Every type (strings mostly not UTF-8), and UTF-8 strings.
    fn any_value() -> impl Strategy<Value = TypedData> {
        prop_oneof![
            crate::spop::data::tests::arb_typed_data(),
            ".{0,12}".prop_map(|text: String| TypedData::String(text.into())),
        ]
    }

    proptest! {
        #[test]
        fn every_value_reads_back_from_its_text(value in any_value()) {
            let text = typed_value_text(&value);
            prop_assert_eq!(parse_typed_value(&text), Ok(value), "{}", text);
        }

        #[test]
        fn parsing_never_panics(text in ".{0,40}") {
            let _ = parse_typed_arg(&text);
        }
    }
}
