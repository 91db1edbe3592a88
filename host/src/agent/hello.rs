//! HELLO negotiation: what HAProxy offers, what the agent answers.

use crate::spop::{Hello, KvList, MIN_FRAME_SIZE, SPOP_VERSION, Status};

/// The capability that matters: several NOTIFYs in flight per connection.
pub const CAP_PIPELINING: &str = "pipelining";

/// The outcome of a successful HELLO exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// min(agent limit, HAProxy's announcement): no frame either way may exceed it.
    pub max_frame_size: u32,
    pub pipelining: bool,
    /// A health-check HELLO: answer, then close.
    pub healthcheck: bool,
}

/// Splits a comma list, ignoring spaces around items and empty items.
fn comma_list(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|&b| b == b',')
        .map(|item| item.trim_ascii())
        .filter(|item| !item.is_empty())
}

/// Checks HAPROXY-HELLO and decides the connection's parameters.
///
/// Capabilities: only `pipelining` is echoed. `async` (HAProxy ≤ 3.0: ACKs
/// may come back on another connection of the same engine) is not: this agent
/// always answers on the connection the NOTIFY came from, which is valid
/// whether or not async is enabled, so offering it would promise nothing.
/// `fragmentation` is never offered; a fragmented frame gets status 10.
pub fn negotiate(hello: &KvList, agent_max_frame_size: u32) -> Result<Negotiated, Status> {
    let hello = Hello::parse(hello);
    let versions = hello.supported_versions.ok_or(Status::NoVersion)?;
    if !comma_list(&versions).any(|v| v == SPOP_VERSION.as_bytes()) {
        return Err(Status::UnsupportedVersion);
    }
    let offered_size = hello.max_frame_size.ok_or(Status::NoMaxFrameSize)?;
    if offered_size < u64::from(MIN_FRAME_SIZE) {
        return Err(Status::BadMaxFrameSize);
    }
    let capabilities = hello.capabilities.ok_or(Status::NoCapabilities)?;
    let pipelining = comma_list(&capabilities).any(|c| c == CAP_PIPELINING.as_bytes());
    Ok(Negotiated {
        max_frame_size: offered_size.min(u64::from(agent_max_frame_size)) as u32,
        pipelining,
        healthcheck: hello.healthcheck,
    })
}

/// The AGENT-HELLO payload for a negotiation.
pub fn agent_hello(negotiated: &Negotiated) -> KvList {
    let capabilities = if negotiated.pipelining {
        CAP_PIPELINING
    } else {
        ""
    };
    Hello::agent_kv(SPOP_VERSION, negotiated.max_frame_size, capabilities)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spop::TypedData;
    use bytes::Bytes;

    fn hello(
        versions: Option<&'static str>,
        size: Option<TypedData>,
        caps: Option<&'static str>,
    ) -> KvList {
        let mut kv = KvList::new();
        if let Some(v) = versions {
            kv = kv.with(
                "supported-versions",
                TypedData::String(Bytes::from_static(v.as_bytes())),
            );
        }
        if let Some(s) = size {
            kv = kv.with("max-frame-size", s);
        }
        if let Some(c) = caps {
            kv = kv.with(
                "capabilities",
                TypedData::String(Bytes::from_static(c.as_bytes())),
            );
        }
        kv
    }

    #[test]
    fn negotiates_the_smaller_size_and_pipelining() {
        let got = negotiate(
            &hello(
                Some(" 1.0 , 2.0 "),
                Some(TypedData::Uint32(16380)),
                Some("async, pipelining "),
            ),
            8192,
        )
        .expect("accepted");
        assert_eq!(got.max_frame_size, 8192);
        assert!(got.pipelining);
        assert!(!got.healthcheck);
        let reply = agent_hello(&got);
        assert_eq!(reply.get_str("capabilities"), Some(&b"pipelining"[..]));
        assert_eq!(reply.get("max-frame-size"), Some(&TypedData::Uint32(8192)));
    }

    #[test]
    fn any_integer_type_carries_the_size() {
        let got = negotiate(
            &hello(Some("2.0"), Some(TypedData::Int64(300)), Some("")),
            16380,
        )
        .expect("accepted");
        assert_eq!(got.max_frame_size, 300);
        assert!(!got.pipelining);
    }

    #[test]
    fn each_missing_or_bad_key_has_its_status() {
        let size = || Some(TypedData::Uint32(16380));
        assert_eq!(
            negotiate(&hello(None, size(), Some("")), 16380),
            Err(Status::NoVersion)
        );
        assert_eq!(
            negotiate(&hello(Some("2.0"), None, Some("")), 16380),
            Err(Status::NoMaxFrameSize)
        );
        assert_eq!(
            negotiate(&hello(Some("2.0"), size(), None), 16380),
            Err(Status::NoCapabilities)
        );
        assert_eq!(
            negotiate(&hello(Some("1.0,3.0"), size(), Some("")), 16380),
            Err(Status::UnsupportedVersion)
        );
        assert_eq!(
            negotiate(
                &hello(Some("2.0"), Some(TypedData::Uint32(255)), Some("")),
                16380
            ),
            Err(Status::BadMaxFrameSize)
        );
        assert_eq!(
            negotiate(
                &hello(Some("2.0"), Some(TypedData::Int64(-1)), Some("")),
                16380
            ),
            Err(Status::NoMaxFrameSize)
        );
    }
}
