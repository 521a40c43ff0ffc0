//! Where the store is and how to reach it: the settings every adapter opens from.

use lifeboat::StoreLayout;
use std::path::PathBuf;
use std::time::Duration;

/// A store URL that is not one lifeboat can open, with what it expected.
#[derive(Debug, thiserror::Error)]
#[error("invalid store {url:?}: {hint}")]
pub struct StoreUrlError {
    pub url: String,
    pub hint: &'static str,
}

/// Where snapshots live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `s3://BUCKET/PREFIX`
    S3 { bucket: String, prefix: String },
    /// `file:///DIR`
    File { root: PathBuf },
}

impl StoreUrl {
    pub fn parse(text: &str) -> Result<StoreUrl, StoreUrlError> {
        let invalid = |hint: &'static str| StoreUrlError { url: text.to_owned(), hint };
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'.');
            if !valid_bucket {
                return Err(invalid(
                    "expected s3://BUCKET/PREFIX with a bucket name of 3-63 lowercase letters, digits, '-' or '.'",
                ));
            }
            return Ok(StoreUrl::S3 { bucket: bucket.to_owned(), prefix: prefix.trim_matches('/').to_owned() });
        }
        if let Some(path) = text.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid("expected file:///ABSOLUTE/DIR (three slashes)"));
            }
            return Ok(StoreUrl::File { root: PathBuf::from(path) });
        }
        Err(invalid("expected s3://BUCKET/PREFIX or file:///DIR"))
    }

    /// The prefix inside the bucket or directory; the directory itself is the root.
    pub fn prefix(&self) -> &str {
        match self {
            StoreUrl::S3 { prefix, .. } => prefix,
            StoreUrl::File { .. } => "",
        }
    }
}

/// How to reach S3; ignored for `file://` stores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// A custom endpoint (MinIO, SeaweedFS, …); path-style addressing when set.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// A CA (PEM) to trust for an `https://` endpoint behind a private CA, on top of
    /// the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// The store and its layout for one cluster.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    pub url: StoreUrl,
    pub s3: S3Settings,
    pub cluster: String,
    /// One timeout for every store request (connect and each attempt).
    pub timeout: Duration,
}

impl StoreSettings {
    pub fn layout(&self) -> StoreLayout {
        StoreLayout::new(self.url.prefix(), &self.cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(
            StoreUrl::parse("s3://my-bucket/backups/prod/").unwrap(),
            StoreUrl::S3 { bucket: "my-bucket".into(), prefix: "backups/prod".into() }
        );
        assert_eq!(StoreUrl::parse("file:///var/lib/x").unwrap(), StoreUrl::File { root: "/var/lib/x".into() });
        for bad in ["s3://", "s3://UPPER/x", "file://relative", "gs://bucket", "/tmp/x"] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
