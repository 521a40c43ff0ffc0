//! Validated settings: raw flags (`args`) become these once, before any command
//! runs. Flags override the environment (`LIFEBOAT_*`, handled
//! by clap), which overrides the TOML config file, which overrides defaults.

use crate::agent::{AgentSettings, ConfiguredMember};
use crate::backup::restore::{Etcdutl, RestoreError};
use crate::cli::args::{Common, MemberArgs, MemberControl};
use crate::cli::etcd_access::EtcdAccess;
use crate::etcd::EtcdClient;
use crate::exit::{Classify, Exit};
use crate::member::MemberSpec;
use crate::pipeline::PipelineSettings;
use crate::ports::DataDirBuilder;
use crate::store::settings::{Encryption, KeySource, S3Settings, StoreSettings, StoreUrl, StoreUrlError};
use lifeboat::{Compression, Policy, Retention};
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

impl From<StoreUrlError> for ConfigError {
    fn from(error: StoreUrlError) -> Self {
        ConfigError::Invalid { what: "store", value: error.url, hint: error.hint.into() }
    }
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
    /// The agent's member list (`--initial-cluster`), one `NAME=PEER_URL` per member.
    pub initial_cluster: Option<String>,
    pub store: Option<String>,
    pub cluster: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_ca_file: Option<PathBuf>,
    pub s3_sse: Option<String>,
    pub s3_sse_kms_key_id: Option<String>,
    pub s3_sse_c_key_file: Option<PathBuf>,
    pub encryption_key_file: Option<PathBuf>,
    pub compression: Option<Compression>,
    pub etcdutl: Option<PathBuf>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
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

/// A request to etcd or the store waits this long unless `--timeout-ms` says otherwise.
const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// The settings every command shares, validated, with the config file underneath.
pub struct Resolved {
    pub file: FileConfig,
    /// The endpoints, with TLS and the user.
    pub etcd_access: EtcdAccess,
    pub store: Option<StoreSettings>,
    pub timeout: Duration,
}

pub fn resolve(common: &Common) -> Result<Resolved, ConfigError> {
    let file = match &common.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let endpoints = if common.endpoints.is_empty() {
        parse_endpoints(file.endpoints.as_deref().unwrap_or(&[]))?
    } else {
        parse_endpoints(&common.endpoints)?
    };
    let etcd_access = super::etcd_access::resolve(common, &file, endpoints);
    if let Some(pki) = &etcd_access.kubeadm {
        tracing::debug!(pki = %pki.display(), "etcd access from kubeadm's layout");
    }
    let timeout = Duration::from_millis(common.timeout_ms.or(file.timeout_ms).unwrap_or(DEFAULT_TIMEOUT_MS).max(100));
    let store = match common.store.clone().or_else(|| file.store.clone()) {
        None => None,
        Some(url) => {
            let cluster = common.cluster.clone().or_else(|| file.cluster.clone()).ok_or(ConfigError::Missing {
                what: "the cluster name",
                flag: "--cluster NAME",
                env: "LIFEBOAT_CLUSTER",
                key: "cluster",
            })?;
            let mode = common.s3_sse.clone().or_else(|| file.s3_sse.clone());
            let encryption = Encryption::from_settings(
                mode.as_deref(),
                common.s3_sse_kms_key_id.as_deref().or(file.s3_sse_kms_key_id.as_deref()),
                common.s3_sse_c_key_file.as_deref().or(file.s3_sse_c_key_file.as_deref()),
            )
            .map_err(|hint| ConfigError::Invalid {
                what: "--s3-sse",
                value: mode.clone().unwrap_or_default(),
                hint: hint.into(),
            })?;
            Some(StoreSettings {
                url: StoreUrl::parse(&url)?,
                s3: S3Settings {
                    endpoint: common.s3_endpoint.clone().or_else(|| file.s3_endpoint.clone()),
                    region: common.s3_region.clone().or_else(|| file.s3_region.clone()),
                    ca_file: common.s3_ca_file.clone().or_else(|| file.s3_ca_file.clone()),
                    encryption,
                },
                sealing: key_source(
                    common.encryption_key_file.clone().or_else(|| file.encryption_key_file.clone()),
                    std::env::var_os("LIFEBOAT_ENCRYPTION_KEY").is_some_and(|key| !key.is_empty()),
                )?,
                cluster: validate_cluster_name(&cluster)?,
                timeout,
            })
        }
    };
    Ok(Resolved { file, etcd_access, store, timeout })
}

/// Where the client-side encryption key comes from: a file, or the environment
/// (never a flag: its value would show in `ps`). Both at once is ambiguous.
fn key_source(file: Option<PathBuf>, environment: bool) -> Result<Option<KeySource>, ConfigError> {
    match (file, environment) {
        (Some(path), true) => Err(ConfigError::Invalid {
            what: "--encryption-key-file",
            value: path.display().to_string(),
            hint: "LIFEBOAT_ENCRYPTION_KEY is set too: give the key one way only".into(),
        }),
        (Some(path), false) => Ok(Some(KeySource::File(path))),
        (None, true) => Ok(Some(KeySource::Environment)),
        (None, false) => Ok(None),
    }
}

impl Resolved {
    pub fn etcd(&self) -> Result<EtcdClient, ConfigError> {
        if self.etcd_access.endpoints.is_empty() {
            return Err(ConfigError::Missing {
                what: "etcd endpoints",
                flag: "--endpoints URL,URL…",
                env: "LIFEBOAT_ENDPOINTS",
                key: "endpoints",
            });
        }
        Ok(EtcdClient::new(self.etcd_access.endpoints.clone(), self.timeout)
            .with_security(self.etcd_access.security()?))
    }

    pub fn store_settings(&self) -> Result<&StoreSettings, ConfigError> {
        self.store.as_ref().ok_or(ConfigError::Missing {
            what: "the store",
            flag: "--store s3://BUCKET/PREFIX|file:///DIR",
            env: "LIFEBOAT_STORE",
            key: "store",
        })
    }
}

pub fn member_spec(args: &MemberArgs) -> MemberSpec {
    MemberSpec {
        name: args.name.clone(),
        data_dir: args.data_dir.clone(),
        client_url: args.client_url.trim_end_matches('/').to_owned(),
        peer_url: args.peer_url.trim_end_matches('/').to_owned(),
        extra_args: args.etcd_args.clone(),
    }
}

pub fn default_state_dir(args: &MemberArgs) -> std::path::PathBuf {
    let mut path = args.data_dir.as_os_str().to_owned();
    path.push(".lifeboat");
    path.into()
}

/// `--initial-cluster` paired with `--endpoints`, member by member.
pub fn configured_members(resolved: &Resolved, args: &MemberArgs) -> Result<Vec<ConfiguredMember>, ConfigError> {
    let Some(initial_cluster) = args.initial_cluster.as_ref().or(resolved.file.initial_cluster.as_ref()) else {
        return Err(ConfigError::Missing {
            what: "the member list",
            flag: "--initial-cluster NAME=PEER_URL,…",
            env: "LIFEBOAT_INITIAL_CLUSTER",
            key: "initial-cluster",
        });
    };
    let pairs: Vec<(String, String)> = initial_cluster
        .split(',')
        .map(|entry| entry.trim())
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry.split_once('=').map(|(name, url)| (name.to_owned(), url.trim_end_matches('/').to_owned())).ok_or_else(
                || ConfigError::Invalid {
                    what: "--initial-cluster entry",
                    value: entry.to_owned(),
                    hint: "expected NAME=PEER_URL".into(),
                },
            )
        })
        .collect::<Result<_, _>>()?;
    for (name, _) in &pairs {
        validate_member_name(name)?;
    }
    let endpoints = &resolved.etcd_access.endpoints;
    if pairs.len() != endpoints.len() {
        return Err(ConfigError::Invalid {
            what: "--endpoints",
            value: endpoints.join(","),
            hint: format!(
                "give one client URL per --initial-cluster member, in the same order ({} members)",
                pairs.len()
            ),
        });
    }
    Ok(pairs
        .into_iter()
        .zip(endpoints)
        .map(|((name, peer_url), client_url)| ConfiguredMember { name, peer_url, client_url: client_url.clone() })
        .collect())
}

pub fn agent_settings(resolved: &Resolved, args: &MemberArgs) -> Result<AgentSettings, ConfigError> {
    let store = resolved.store_settings()?;
    Ok(AgentSettings {
        cluster: store.cluster.clone(),
        policy: resolved.file.policy.clone().unwrap_or_default(),
        compression: resolved.file.compression.unwrap_or(Compression::None),
        pipeline: PipelineSettings::default(),
        members: configured_members(resolved, args)?,
        initial_cluster_token: args.initial_cluster_token.clone(),
        state_dir: args.state_dir.clone().unwrap_or_else(|| default_state_dir(args)),
        supervise: args.member_control == MemberControl::Child,
        prepare_only: false,
        dry_run: args.dry_run,
    })
}

/// The etcdutl a command restores with: its `--etcdutl` (or `LIFEBOAT_ETCDUTL`), else the
/// config file's `etcdutl`, else `etcdutl` on PATH.
pub fn etcdutl(resolved: &Resolved, flag: Option<&PathBuf>) -> Etcdutl {
    Etcdutl(flag.cloned().or_else(|| resolved.file.etcdutl.clone()).unwrap_or_else(|| "etcdutl".into()))
}

/// [`etcdutl`], proven to run before the command reads anything. A command that restores
/// (`restore`, `snapshots verify --restore`, the agent) would otherwise meet a missing
/// etcdutl only when it first restores: for the agent, in the middle of a disaster recovery.
pub fn runnable_etcdutl(resolved: &Resolved, flag: Option<&PathBuf>) -> Result<Etcdutl, ConfigError> {
    let etcdutl = etcdutl(resolved, flag);
    match etcdutl.ready() {
        Ok(()) => Ok(etcdutl),
        Err(error) => Err(ConfigError::Invalid {
            what: "etcdutl",
            value: etcdutl.0.display().to_string(),
            hint: match error {
                RestoreError::EtcdutlMissing { source, .. } => format!(
                    "cannot run it ({source}): install etcd's etcdutl (3.5.10 or later), or pass its path with --etcdutl PATH, LIFEBOAT_ETCDUTL or the config file's `etcdutl`"
                ),
                other => other.to_string(),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // The member list, as the error for a missing one says it may be given.
        std::fs::write(&path, "initial-cluster = \"cp0=https://10.0.0.10:2380\"\n").unwrap();
        let config = FileConfig::load(&path).unwrap();
        assert_eq!(config.initial_cluster.as_deref(), Some("cp0=https://10.0.0.10:2380"));
    }
}
