//! The recording's settings (`--record*` and the file's `[record]` table),
//! and the one place where a flag wins over the file and the file over the
//! default.

use std::path::PathBuf;

use crate::record::RecordSpec;
use crate::record::redact::{RedactRules, Redaction};

/// The share recorded when only the directory is given.
pub const DEFAULT_RECORD_SHARE: f64 = 0.01;
/// What all the recording files hold together by default.
pub const DEFAULT_RECORD_MAX_BYTES: u64 = 100 << 20;

/// What one source (the flags, the file) sets; `None` is left to the next.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordSettings {
    pub dir: Option<PathBuf>,
    pub share: Option<f64>,
    pub max_bytes: Option<u64>,
    /// Applied in order, the later winning.
    pub redact: Vec<(String, Redaction)>,
}

impl RecordSettings {
    /// The recording these settings ask for, `file`'s filling what they
    /// leave out; `None` without a directory.
    pub fn spec(&self, file: &RecordSettings) -> Option<RecordSpec> {
        let dir = self.dir.clone().or_else(|| file.dir.clone())?;
        let mut redact = RedactRules::default();
        redact.extend(file.redact.iter().cloned());
        redact.extend(self.redact.iter().cloned());
        Some(RecordSpec {
            dir,
            share: self.share.or(file.share).unwrap_or(DEFAULT_RECORD_SHARE),
            max_bytes: self
                .max_bytes
                .or(file.max_bytes)
                .unwrap_or(DEFAULT_RECORD_MAX_BYTES),
            redact,
        })
    }
}

/// Parses a share of messages: a number from 0 to 1.
pub fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("`{text}` is not a share from 0 to 1 (0.01 is 1 %)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_default() {
        let file = RecordSettings {
            dir: Some("/var/lib/spoa-host/record".into()),
            share: Some(0.5),
            max_bytes: None,
            redact: vec![("cookie".into(), Redaction::Drop)],
        };
        let flags = RecordSettings {
            share: Some(0.1),
            redact: vec![("cookie".into(), Redaction::Hash)],
            ..RecordSettings::default()
        };
        let spec = flags.spec(&file).expect("recording");
        assert_eq!(spec.dir, PathBuf::from("/var/lib/spoa-host/record"));
        assert_eq!(spec.share, 0.1);
        assert_eq!(spec.max_bytes, DEFAULT_RECORD_MAX_BYTES);
        let mut expected = RedactRules::default();
        expected.extend([("cookie".to_owned(), Redaction::Hash)]);
        assert_eq!(spec.redact, expected);
        assert_eq!(
            RecordSettings::default().spec(&RecordSettings::default()),
            None
        );
    }

    #[test]
    fn a_share_is_from_zero_to_one() {
        assert_eq!(parse_share("0.01"), Ok(0.01));
        assert_eq!(parse_share("1"), Ok(1.0));
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("-0.1").is_err());
        assert!(parse_share("NaN").is_err());
        assert!(parse_share("1%").is_err());
    }
}
