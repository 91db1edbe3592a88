//! What a recording keeps of each argument, by name: the value (`keep`, the
//! default), nothing (`drop`), or a hash that still shows which messages
//! carried the same value (`hash`: `str:sha256:` and the first 16 bytes of
//! the SHA-256 of the value's text, in hex).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::spop::{self, notation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redaction {
    Keep,
    Drop,
    Hash,
}

impl Redaction {
    pub fn parse(text: &str) -> Result<Redaction, String> {
        match text {
            "keep" => Ok(Redaction::Keep),
            "drop" => Ok(Redaction::Drop),
            "hash" => Ok(Redaction::Hash),
            other => Err(format!("`{other}` is not keep, drop or hash")),
        }
    }
}

/// Redaction by argument name; an argument not named is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedactRules(BTreeMap<String, Redaction>);

/// A message's arguments as recorded, and the names of those redacted.
pub struct RedactedArgs {
    pub args: Vec<String>,
    pub redacted: Vec<String>,
}

impl RedactRules {
    pub fn new(rules: BTreeMap<String, Redaction>) -> RedactRules {
        RedactRules(rules)
    }

    /// Parses `NAME=keep|drop|hash` (`--record-redact`).
    pub fn parse_rule(text: &str) -> Result<(String, Redaction), String> {
        let (name, rule) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not NAME=keep|drop|hash"))?;
        if name.is_empty() {
            return Err(format!("`{text}`: the argument name is empty"));
        }
        Ok((name.to_owned(), Redaction::parse(rule)?))
    }

    /// Later rules win: the flags are applied over the file's.
    pub fn extend(&mut self, rules: impl IntoIterator<Item = (String, Redaction)>) {
        self.0.extend(rules);
    }

    pub fn apply(&self, args: &[spop::Arg]) -> RedactedArgs {
        let mut out = RedactedArgs {
            args: Vec::with_capacity(args.len()),
            redacted: Vec::new(),
        };
        for arg in args {
            let name = String::from_utf8_lossy(&arg.name);
            match self
                .0
                .get(name.as_ref())
                .copied()
                .unwrap_or(Redaction::Keep)
            {
                Redaction::Keep => out.args.push(notation::arg_text(arg)),
                Redaction::Drop => out.redacted.push(name.into_owned()),
                Redaction::Hash => {
                    let digest = Sha256::digest(notation::typed_value_text(&arg.value));
                    out.args
                        .push(format!("{name}=str:sha256:{}", hex::encode(&digest[..16])));
                    out.redacted.push(name.into_owned());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn arg(name: &'static str, value: &'static str) -> spop::Arg {
        spop::Arg {
            name: Bytes::from_static(name.as_bytes()),
            value: spop::TypedData::String(Bytes::from_static(value.as_bytes())),
        }
    }

    #[test]
    fn arguments_are_kept_dropped_or_hashed_by_name() {
        let mut rules = RedactRules::default();
        rules.extend([
            RedactRules::parse_rule("cookie=hash").expect("rule"),
            RedactRules::parse_rule("auth=drop").expect("rule"),
        ]);
        let args = [
            arg("ua", "curl/8"),
            arg("cookie", "s=1"),
            arg("auth", "secret"),
        ];
        let once = rules.apply(&args);
        assert_eq!(once.args[0], "ua=str:curl/8");
        assert!(
            once.args[1].starts_with("cookie=str:sha256:"),
            "{}",
            once.args[1]
        );
        assert_eq!(once.args[1].len(), "cookie=str:sha256:".len() + 32);
        assert_eq!(once.args.len(), 2, "auth is dropped");
        assert_eq!(once.redacted, ["cookie", "auth"]);
        assert!(
            !once
                .args
                .iter()
                .any(|a| a.contains("secret") || a.contains("s=1"))
        );
        // The same value hashes the same.
        assert_eq!(rules.apply(&args).args[1], once.args[1]);
    }

    #[test]
    fn a_rule_names_an_argument_and_a_redaction() {
        assert!(RedactRules::parse_rule("cookie").is_err());
        assert!(RedactRules::parse_rule("=hash").is_err());
        assert!(RedactRules::parse_rule("cookie=mask").is_err());
    }
}
