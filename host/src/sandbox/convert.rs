//! Conversions between SPOP types and the WIT types of the guest ABI, and
//! validation of what a guest returns.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::Bytes;

use super::bindings::wit;
use crate::spop;

pub fn message_to_wit(message: &spop::Message) -> wit::Message {
    wit::Message {
        name: String::from_utf8_lossy(&message.name).into_owned(),
        args: message
            .args
            .iter()
            .map(|arg| wit::Arg {
                name: String::from_utf8_lossy(&arg.name).into_owned(),
                value: data_to_wit(&arg.value),
            })
            .collect(),
    }
}

fn data_to_wit(value: &spop::TypedData) -> wit::TypedData {
    use spop::TypedData as D;
    match value {
        D::Null => wit::TypedData::Null,
        D::Bool(v) => wit::TypedData::Boolean(*v),
        D::Int32(v) => wit::TypedData::Int32(*v),
        D::Uint32(v) => wit::TypedData::Uint32(*v),
        D::Int64(v) => wit::TypedData::Int64(*v),
        D::Uint64(v) => wit::TypedData::Uint64(*v),
        D::Ipv4(addr) => wit::TypedData::Ipv4(ipv4_to_wit(*addr)),
        D::Ipv6(addr) => wit::TypedData::Ipv6(ipv6_to_wit(*addr)),
        D::String(bytes) => wit::TypedData::String(bytes.to_vec()),
        D::Binary(bytes) => wit::TypedData::Binary(bytes.to_vec()),
    }
}

/// An IPv4 address as WIT's tuple of octets.
pub(super) fn ipv4_to_wit(addr: Ipv4Addr) -> (u8, u8, u8, u8) {
    let [a, b, c, d] = addr.octets();
    (a, b, c, d)
}

/// An IPv6 address as WIT's tuple of 16-bit segments.
pub(super) fn ipv6_to_wit(addr: Ipv6Addr) -> (u16, u16, u16, u16, u16, u16, u16, u16) {
    let [a, b, c, d, e, f, g, h] = addr.segments();
    (a, b, c, d, e, f, g, h)
}

fn data_from_wit(value: wit::TypedData) -> spop::TypedData {
    use spop::TypedData as D;
    match value {
        wit::TypedData::Null => D::Null,
        wit::TypedData::Boolean(v) => D::Bool(v),
        wit::TypedData::Int32(v) => D::Int32(v),
        wit::TypedData::Uint32(v) => D::Uint32(v),
        wit::TypedData::Int64(v) => D::Int64(v),
        wit::TypedData::Uint64(v) => D::Uint64(v),
        wit::TypedData::Ipv4((a, b, c, d)) => D::Ipv4(Ipv4Addr::new(a, b, c, d)),
        wit::TypedData::Ipv6((a, b, c, d, e, f, g, h)) => {
            D::Ipv6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
        }
        wit::TypedData::String(bytes) => D::String(Bytes::from(bytes)),
        wit::TypedData::Binary(bytes) => D::Binary(Bytes::from(bytes)),
    }
}

fn scope_from_wit(scope: wit::VarScope) -> spop::VarScope {
    match scope {
        wit::VarScope::Proc => spop::VarScope::Proc,
        wit::VarScope::Sess => spop::VarScope::Sess,
        wit::VarScope::Txn => spop::VarScope::Txn,
        wit::VarScope::Req => spop::VarScope::Req,
        wit::VarScope::Res => spop::VarScope::Res,
    }
}

fn checked_name(name: String) -> Result<Bytes, String> {
    spop::check_var_name(name.as_bytes())?;
    Ok(Bytes::from(name))
}

/// Validates and converts a guest's actions. One invalid action rejects the
/// whole list: a half-applied answer would be harder to reason about than none.
pub fn actions_from_wit(actions: Vec<wit::Action>) -> Result<Vec<spop::Action>, String> {
    actions
        .into_iter()
        .map(|action| match action {
            wit::Action::SetVar(set) => Ok(spop::Action::SetVar {
                scope: scope_from_wit(set.scope),
                name: checked_name(set.name)?,
                value: data_from_wit(set.value),
            }),
            wit::Action::UnsetVar(unset) => Ok(spop::Action::UnsetVar {
                scope: scope_from_wit(unset.scope),
                name: checked_name(unset.name)?,
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded() {
        let ok = wit::Action::UnsetVar(wit::UnsetVar {
            scope: wit::VarScope::Txn,
            name: "flag".into(),
        });
        assert!(actions_from_wit(vec![ok]).is_ok());
        for bad in [String::new(), "x".repeat(spop::MAX_VAR_NAME + 1)] {
            let action = wit::Action::UnsetVar(wit::UnsetVar {
                scope: wit::VarScope::Txn,
                name: bad,
            });
            assert!(actions_from_wit(vec![action]).is_err());
        }
    }

    #[test]
    fn every_data_type_survives_the_trip() {
        use spop::TypedData as D;
        let values = [
            D::Null,
            D::Bool(true),
            D::Int32(-7),
            D::Uint32(7),
            D::Int64(-1),
            D::Uint64(u64::MAX),
            D::Ipv4(Ipv4Addr::new(192, 0, 2, 1)),
            D::Ipv6("2001:db8::1".parse().expect("addr")),
            D::String(Bytes::from_static(&[0xff, b'a'])),
            D::Binary(Bytes::from_static(&[0, 1])),
        ];
        for value in values {
            assert_eq!(data_from_wit(data_to_wit(&value)), value);
        }
    }
}
