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
    /// Server-side encryption asked of the store on every write (and, for SSE-C,
    /// the key sent with every read).
    pub encryption: Option<Encryption>,
}

/// Server-side encryption of the objects lifeboat writes (`--s3-sse`,
/// `--s3-sse-kms-key-id`, `--s3-sse-c-key-file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encryption {
    /// SSE-S3 (`AES256`): keys the store manages.
    S3,
    /// SSE-KMS (`aws:kms`), with the named key or the bucket's default one.
    Kms { key_id: Option<String> },
    /// SSE-C: a 256-bit key of the caller's, read from this file when the store
    /// opens and sent with every request that reads or writes an object's bytes.
    Customer { key_file: PathBuf },
}

impl Encryption {
    /// From the three settings as given; `None` when none is set.
    pub fn from_settings(
        mode: Option<&str>,
        kms_key_id: Option<&str>,
        customer_key_file: Option<&std::path::Path>,
    ) -> Result<Option<Encryption>, &'static str> {
        let refuse = |hint: &'static str| hint;
        match (mode, kms_key_id, customer_key_file) {
            (None, None, None) => Ok(None),
            (Some(_), _, Some(_)) | (None, Some(_), Some(_)) => Err(refuse(
                "--s3-sse-c-key-file (SSE-C) and --s3-sse/--s3-sse-kms-key-id (SSE-S3/KMS) exclude each other: choose one",
            )),
            (None, None, Some(path)) => Ok(Some(Encryption::Customer { key_file: path.to_owned() })),
            (Some("AES256"), None, None) => Ok(Some(Encryption::S3)),
            (Some("AES256"), Some(_), None) => {
                Err(refuse("--s3-sse-kms-key-id needs --s3-sse aws:kms (or no --s3-sse), not AES256"))
            }
            (Some("aws:kms") | None, key_id, None) => {
                Ok(Some(Encryption::Kms { key_id: key_id.map(str::to_owned) }))
            }
            (Some(_), _, None) => Err(refuse(
                "--s3-sse takes AES256 (SSE-S3) or aws:kms (SSE-KMS); for SSE-C give --s3-sse-c-key-file instead",
            )),
        }
    }
}

/// Where the client-side encryption key comes from (`store::sealed`). The key
/// itself is read when the store opens and never kept in settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `--encryption-key-file` / `encryption_key_file`.
    File(PathBuf),
    /// `LIFEBOAT_ENCRYPTION_KEY`.
    Environment,
}

/// The store and its layout for one cluster.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    pub url: StoreUrl,
    pub s3: S3Settings,
    /// Client-side encryption of every object, when a key is configured.
    pub sealing: Option<KeySource>,
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
