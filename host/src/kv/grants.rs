//! Which buckets a guest may open: `default` unless the operator grants
//! others (`--kv-bucket`, `kv-buckets = [...]`), or every one (`*`).

/// The bucket every guest may open unless told otherwise; the empty name
/// opens it too.
pub const DEFAULT_BUCKET: &str = "default";
const MAX_BUCKET_NAME: usize = 64;

/// The buckets a guest may open.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BucketGrants {
    /// Any bucket (`*`).
    All,
    /// These names only.
    Only(Vec<String>),
}

impl Default for BucketGrants {
    fn default() -> BucketGrants {
        BucketGrants::Only(vec![DEFAULT_BUCKET.to_owned()])
    }
}

impl BucketGrants {
    /// From the operator's list: `*` grants every bucket; an empty list the
    /// default one.
    pub fn from_names(names: &[String]) -> Result<BucketGrants, String> {
        if names.is_empty() {
            return Ok(BucketGrants::default());
        }
        if names.iter().any(|name| name == "*") {
            return Ok(BucketGrants::All);
        }
        for name in names {
            validate_bucket_name(name)?;
        }
        let mut names = names.to_vec();
        names.sort();
        names.dedup();
        Ok(BucketGrants::Only(names))
    }

    /// The bucket `identifier` opens, if granted (`""` is `default`).
    pub fn open(&self, identifier: &str) -> Result<String, BucketRefusal> {
        let name = if identifier.is_empty() {
            DEFAULT_BUCKET
        } else {
            identifier
        };
        validate_bucket_name(name).map_err(BucketRefusal::Invalid)?;
        match self {
            BucketGrants::All => Ok(name.to_owned()),
            BucketGrants::Only(names) if names.iter().any(|granted| granted == name) => {
                Ok(name.to_owned())
            }
            BucketGrants::Only(_) => Err(BucketRefusal::NotGranted),
        }
    }

    /// A stable text form, for fingerprints and logs.
    pub fn describe(&self) -> String {
        match self {
            BucketGrants::All => "*".to_owned(),
            BucketGrants::Only(names) => names.join(","),
        }
    }
}

/// Why `open` refused a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketRefusal {
    /// Not a valid name: the guest gets `no-such-store`.
    Invalid(String),
    /// Valid, but not granted: the guest gets `access-denied`.
    NotGranted,
}

/// Bucket names are `[A-Za-z0-9_.-]{1,64}`: they become part of Redis keys
/// and patterns, so nothing that needs escaping.
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if name.is_empty() || name.len() > MAX_BUCKET_NAME || !valid_chars {
        return Err(format!(
            "bucket name `{name}` must be 1 to {MAX_BUCKET_NAME} of A-Z a-z 0-9 _ - ."
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_grant_opens_the_default_bucket_only() {
        let grants = BucketGrants::default();
        assert_eq!(grants.open(""), Ok("default".into()));
        assert_eq!(grants.open("default"), Ok("default".into()));
        assert_eq!(grants.open("other"), Err(BucketRefusal::NotGranted));
        assert!(matches!(grants.open("a:b"), Err(BucketRefusal::Invalid(_))));
    }

    #[test]
    fn listed_and_wildcard_grants() {
        let grants = BucketGrants::from_names(&["rate".into(), "bans".into()]).unwrap();
        assert_eq!(grants.open("rate"), Ok("rate".into()));
        assert_eq!(grants.open("default"), Err(BucketRefusal::NotGranted));
        let all = BucketGrants::from_names(&["*".into()]).unwrap();
        assert_eq!(all.open("anything"), Ok("anything".into()));
        assert!(BucketGrants::from_names(&["no spaces".into()]).is_err());
    }
}
