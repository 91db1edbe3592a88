//! One recorded message per line (JSON lines): when, which guest and
//! module version, the message in `spoa-host call`'s notation, and what was
//! answered. A record is also a `spoa-host call --cases` case (`message`,
//! `args`, `expect` or `expect_failure`), so a recording is a cases file:
//! `spoa-host call --cases` reads JSON lines, or `jq -s . FILE` makes the
//! array.
//!
//! ```json
//! {"time":"2026-12-03T10:41:29.123Z","unix_ms":1796294489123,"guest":"iprep",
//!  "module_sha256":"9f…","message":"check-client-ip","args":["ip=ipv4:192.0.2.7"],
//!  "expect":[{"action":"set-var","scope":"sess","name":"ip_score",
//!             "value":{"type":"int32","value":42}}]}
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::agent::MessageOutcome;
use crate::spop::{self, TypedData};

/// A typed value as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonValue {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

/// An action as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonAction {
    pub action: String,
    pub scope: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<JsonValue>,
}

pub fn value_to_json(value: &TypedData) -> JsonValue {
    use serde_json::json;
    let (kind, value) = match value {
        TypedData::Null => ("null", None),
        TypedData::Bool(v) => ("bool", Some(json!(v))),
        TypedData::Int32(v) => ("int32", Some(json!(v))),
        TypedData::Uint32(v) => ("uint32", Some(json!(v))),
        TypedData::Int64(v) => ("int64", Some(json!(v))),
        TypedData::Uint64(v) => ("uint64", Some(json!(v))),
        TypedData::Ipv4(v) => ("ipv4", Some(json!(v.to_string()))),
        TypedData::Ipv6(v) => ("ipv6", Some(json!(v.to_string()))),
        TypedData::String(v) => ("str", Some(json!(String::from_utf8_lossy(v)))),
        TypedData::Binary(v) => ("bin", Some(json!(hex::encode(v)))),
    };
    JsonValue {
        kind: kind.to_owned(),
        value,
    }
}

pub fn action_to_json(action: &spop::Action) -> JsonAction {
    let text = |name: &[u8]| String::from_utf8_lossy(name).into_owned();
    match action {
        spop::Action::SetVar { scope, name, value } => JsonAction {
            action: "set-var".into(),
            scope: scope.name().into(),
            name: text(name),
            value: Some(value_to_json(value)),
        },
        spop::Action::UnsetVar { scope, name } => JsonAction {
            action: "unset-var".into(),
            scope: scope.name().into(),
            name: text(name),
            value: None,
        },
    }
}

/// One recorded message and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// When it was answered, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// The same instant, in milliseconds since 1970 (what `--deterministic`
    /// replays freeze the guest's clocks at).
    pub unix_ms: u64,
    pub guest: String,
    /// Hex SHA-256 of the module that answered.
    pub module_sha256: String,
    pub message: String,
    /// `NAME=TYPE:VALUE`, after redaction.
    pub args: Vec<String>,
    /// The actions answered, when the guest answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Vec<JsonAction>>,
    /// The failure kind (`timeout`, `trap`, …), when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_failure: Option<String>,
    /// Arguments whose values were hashed or dropped, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
}

impl Record {
    /// The record of `outcome`, the answer to a message whose arguments
    /// (already redacted) are `args`.
    pub fn new(
        at: SystemTime,
        guest: &str,
        module_sha256: &str,
        message: &spop::Message,
        args: Vec<String>,
        redacted: Vec<String>,
        outcome: &MessageOutcome,
    ) -> Record {
        let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let (expect, expect_failure) = match outcome {
            Ok(actions) => (Some(actions.iter().map(action_to_json).collect()), None),
            Err(failure) => (None, Some(failure.kind.name().to_owned())),
        };
        Record {
            time: rfc3339_millis(since_epoch),
            unix_ms: since_epoch.as_millis() as u64,
            guest: guest.to_owned(),
            module_sha256: module_sha256.to_owned(),
            message: String::from_utf8_lossy(&message.name).into_owned(),
            args,
            expect,
            expect_failure,
            redacted,
        }
    }
}

/// `2026-12-03T10:41:29.123Z`.
fn rfc3339_millis(since_epoch: Duration) -> String {
    let seconds =
        crate::metrics::status::rfc3339(UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs()));
    format!(
        "{}.{:03}Z",
        seconds.trim_end_matches('Z'),
        since_epoch.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_record_is_one_json_line_with_the_answer_in_calls_notation() {
        let message = spop::Message {
            name: Bytes::from_static(b"check-client-ip"),
            args: vec![],
        };
        let answer = Ok(vec![spop::Action::SetVar {
            scope: spop::VarScope::Sess,
            name: Bytes::from_static(b"ip_score"),
            value: TypedData::Int32(42),
        }]);
        let at = UNIX_EPOCH + Duration::from_millis(1_796_294_489_123);
        let args = vec!["ip=ipv4:192.0.2.7".to_owned()];
        let record = Record::new(at, "iprep", "9f", &message, args, vec![], &answer);
        let line = serde_json::to_string(&record).expect("json");
        assert_eq!(
            line,
            r#"{"time":"2026-12-03T10:41:29.123Z","unix_ms":1796294489123,"guest":"iprep","module_sha256":"9f","message":"check-client-ip","args":["ip=ipv4:192.0.2.7"],"expect":[{"action":"set-var","scope":"sess","name":"ip_score","value":{"type":"int32","value":42}}]}"#
        );
        let back: Record = serde_json::from_str(&line).expect("reads back");
        assert_eq!(back, record);
    }
}
