//! A message lowered into the guest straight from the SPOP frame's bytes.
//!
//! The bindings' `message` owns its strings, so passing one costs an
//! allocation and a copy for its name, each argument's name and each string
//! value before the canonical ABI copies them again into the guest. These
//! types have the WIT shape of `message` but borrow from the frame: one
//! allocation per message (its argument list) instead of 2 + n + strings.

use wasmtime::component::{ComponentType, Lower};

use super::bindings::wit;
use super::convert::{ipv4_to_wit, ipv6_to_wit};
use crate::spop;

/// `typed-data`, borrowed.
#[derive(ComponentType, Lower)]
#[component(variant)]
pub(crate) enum DataRef<'a> {
    #[component(name = "null")]
    Null,
    #[component(name = "boolean")]
    Boolean(bool),
    #[component(name = "int32")]
    Int32(i32),
    #[component(name = "uint32")]
    Uint32(u32),
    #[component(name = "int64")]
    Int64(i64),
    #[component(name = "uint64")]
    Uint64(u64),
    #[component(name = "ipv4")]
    Ipv4((u8, u8, u8, u8)),
    #[component(name = "ipv6")]
    Ipv6((u16, u16, u16, u16, u16, u16, u16, u16)),
    #[component(name = "string")]
    String(&'a [u8]),
    #[component(name = "binary")]
    Binary(&'a [u8]),
}

/// `arg`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct ArgRef<'a> {
    name: &'a str,
    value: DataRef<'a>,
}

/// `message`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct MessageRef<'a> {
    name: &'a str,
    args: Vec<ArgRef<'a>>,
}

/// What `handle-message` returns.
pub(crate) type HandleOutput = (Result<Vec<wit::Action>, String>,);

impl<'a> MessageRef<'a> {
    /// `None` when a name is not UTF-8: the owned conversion replaces the
    /// bad bytes, as it always has.
    pub(crate) fn of(message: &'a spop::Message) -> Option<MessageRef<'a>> {
        Some(MessageRef {
            name: std::str::from_utf8(&message.name).ok()?,
            args: message
                .args
                .iter()
                .map(|arg| {
                    Some(ArgRef {
                        name: std::str::from_utf8(&arg.name).ok()?,
                        value: DataRef::of(&arg.value),
                    })
                })
                .collect::<Option<Vec<_>>>()?,
        })
    }
}

impl<'a> DataRef<'a> {
    fn of(value: &'a spop::TypedData) -> DataRef<'a> {
        use spop::TypedData as D;
        match value {
            D::Null => DataRef::Null,
            D::Bool(v) => DataRef::Boolean(*v),
            D::Int32(v) => DataRef::Int32(*v),
            D::Uint32(v) => DataRef::Uint32(*v),
            D::Int64(v) => DataRef::Int64(*v),
            D::Uint64(v) => DataRef::Uint64(*v),
            D::Ipv4(addr) => DataRef::Ipv4(ipv4_to_wit(*addr)),
            D::Ipv6(addr) => DataRef::Ipv6(ipv6_to_wit(*addr)),
            D::String(bytes) => DataRef::String(bytes),
            D::Binary(bytes) => DataRef::Binary(bytes),
        }
    }
}
