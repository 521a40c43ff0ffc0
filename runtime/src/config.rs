//! Settings, validated once: flags override the environment (`LIFEBOAT_*`, handled
//! by clap), which overrides the TOML config file, which overrides defaults.

use crate::exit::{Classify, Exit};
use lifeboat::{Compression, Policy, Retention, StoreLayout};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{what} is required: pass {flag}, set {env}, or put `{key}` in the config file")]
    Missing { what: &'static str, flag: &'static str, env: &'static str, key: &'static str },
    #[error("invalid {what} {value:?}: {hint}")]
    Invalid { what: &'static str, value: String, hint: String },
}

impl Classify for ConfigError {
    fn exit(&self) -> Exit {
        Exit::Usage
    }
}

/// The config file: every key is optional and named like its flag.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub endpoints: Option<Vec<String>>,
    pub store: Option<String>,
    pub cluster: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub compression: Option<Compression>,
    pub etcdutl: Option<PathBuf>,
    pub timeout_ms: Option<u64>,
    pub policy: Option<Policy>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            detail: error.to_string().trim_end().replace('\n', " "),
        })
    }
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
    pub fn parse(text: &str) -> Result<StoreUrl, ConfigError> {
        let invalid =
            |hint: &str| ConfigError::Invalid { what: "store", value: text.to_owned(), hint: hint.to_owned() };
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

pub fn parse_endpoints(values: &[String]) -> Result<Vec<String>, ConfigError> {
    let endpoints: Vec<String> = values
        .iter()
        .flat_map(|value| value.split(','))
        .map(|value| value.trim().trim_end_matches('/').to_owned())
        .filter(|value| !value.is_empty())
        .collect();
    for endpoint in &endpoints {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                what: "etcd endpoint",
                value: endpoint.clone(),
                hint: "expected a client URL like http://10.0.0.1:2379".into(),
            });
        }
    }
    Ok(endpoints)
}

pub fn validate_cluster_name(name: &str) -> Result<String, ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    if !valid {
        return Err(ConfigError::Invalid {
            what: "cluster name",
            value: name.to_owned(),
            hint: "use 1-128 letters, digits, '-', '_' or '.', not starting with '.'".into(),
        });
    }
    Ok(name.to_owned())
}

/// A member name reaches a store key (`heartbeats/<name>.json`), a file beside the
/// data dir and the `ETCD_NAME=` line of an environment file, so it is held to what
/// a hostname may be: 1-253 letters, digits, '-', '_' or '.', starting with a letter
/// or digit (kubeadm names members after their node).
pub fn validate_member_name(name: &str) -> Result<String, ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        && name.bytes().next().is_some_and(|byte| byte.is_ascii_alphanumeric())
        && !name.contains("..");
    if !valid {
        return Err(ConfigError::Invalid {
            what: "member name",
            value: name.to_owned(),
            hint: "use 1-253 letters, digits, '-', '_' or '.', starting with a letter or digit (like a hostname)"
                .into(),
        });
    }
    Ok(name.to_owned())
}

/// For clap's `value_parser`: the same check, as a message.
pub fn member_name(name: &str) -> Result<String, String> {
    validate_member_name(name).map_err(|error| error.to_string())
}

/// The retention that `prune` applies, from the config file's policy or defaults.
pub fn retention(file: &FileConfig) -> Retention {
    file.policy.as_ref().map(|policy| policy.retention.clone()).unwrap_or_default()
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

    #[test]
    fn member_names_are_hostname_like() {
        for good in ["etcd0", "ip-10-0-0-1.ec2.internal", "node_1", "a"] {
            assert_eq!(validate_member_name(good).unwrap(), good);
        }
        for bad in ["", "../x", "a/b", "a b", "-a", ".a", "a..b", "é", "a\nETCD_DATA_DIR=/", &"a".repeat(254)] {
            assert!(validate_member_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn endpoints_split_on_commas() {
        let endpoints = parse_endpoints(&["http://a:2379, http://b:2379/".into()]).unwrap();
        assert_eq!(endpoints, vec!["http://a:2379", "http://b:2379"]);
        assert!(parse_endpoints(&["a:2379".into()]).is_err());
    }

    #[test]
    fn config_file_rejects_unknown_keys() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("lifeboat.toml");
        std::fs::write(&path, "store = \"file:///x\"\nendpoint = [\"http://a:2379\"]\n").unwrap();
        let error = FileConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("unknown field `endpoint`"), "{error}");
        std::fs::write(&path, "endpoints = [\"http://a:2379\"]\ncompression = \"zstd\"\n[policy]\nfailures-max = 5\n")
            .unwrap();
        let config = FileConfig::load(&path).unwrap();
        assert_eq!(config.compression, Some(Compression::Zstd));
        assert_eq!(config.policy.unwrap().failures_max, 5);
    }
}
