//! How to reach etcd: endpoints, TLS files and an RBAC user, from flags, the
//! environment and the config file, with kubeadm's layout as a default.
//!
//! Checked before anything connects (an `https://` endpoint without a CA to trust,
//! a certificate without its key, a password on the command line), so a mistake
//! is named with its fix; checked and read only when a command talks to etcd, so
//! `snapshots list` or `restore` on a host without etcd's keys still works.

use super::args::Common;
use super::config::{ConfigError, FileConfig};
use crate::etcd::{EtcdSecurity, EtcdUser};
use std::path::{Path, PathBuf};

/// Where kubeadm keeps etcd's PKI on a control-plane node.
pub const KUBEADM_PKI: &str = "/etc/kubernetes/pki/etcd";
/// The client URL kubeadm's static etcd pod listens on, on every control-plane node.
pub const KUBEADM_ENDPOINT: &str = "https://127.0.0.1:2379";

/// The validated way to etcd; the secrets themselves are read by [`EtcdAccess::security`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdAccess {
    pub endpoints: Vec<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<Password>,
    /// The kubeadm directory the defaults came from, if they did.
    pub kubeadm: Option<PathBuf>,
}

/// Where the password comes from; never a flag, so it never shows in `ps`.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// `LIFEBOAT_PASSWORD`.
    Environment(String),
    /// `--password-file` / `password-file`.
    File(PathBuf),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Password::Environment(_) => formatter.write_str("Password::Environment(<redacted>)"),
            Password::File(path) => formatter.debug_tuple("Password::File").field(path).finish(),
        }
    }
}

/// `--endpoints`, `--cacert`, `--cert`, `--key`, `--user`, `--password-file`,
/// `LIFEBOAT_PASSWORD`, and `--kubeadm` (or its directory present while no
/// endpoints are given), flags over the file.
pub fn resolve(common: &Common, file: &FileConfig, endpoints: Vec<String>) -> EtcdAccess {
    let password_env = std::env::var("LIFEBOAT_PASSWORD").ok().filter(|password| !password.is_empty());
    resolve_with(common, file, endpoints, password_env)
}

/// [`resolve`] with the password's environment variable passed in (tests).
pub fn resolve_with(
    common: &Common,
    file: &FileConfig,
    mut endpoints: Vec<String>,
    password_env: Option<String>,
) -> EtcdAccess {
    let pick = |flag: &Option<PathBuf>, key: &Option<PathBuf>| flag.clone().or_else(|| key.clone());
    let mut access = EtcdAccess {
        cacert: pick(&common.cacert, &file.cacert),
        cert: pick(&common.cert, &file.cert),
        key: pick(&common.key, &file.key),
        user: common.user.clone().or_else(|| file.user.clone()),
        password: match (common.password_file.clone().or_else(|| file.password_file.clone()), password_env) {
            (Some(path), _) => Some(Password::File(path)),
            (None, Some(password)) => Some(Password::Environment(password)),
            (None, None) => None,
        },
        ..EtcdAccess::default()
    };
    let pki = &common.kubeadm_pki;
    let detected = endpoints.is_empty() && pki.join("ca.crt").is_file();
    if common.kubeadm || detected {
        if endpoints.is_empty() {
            endpoints.push(KUBEADM_ENDPOINT.to_owned());
        }
        access.cacert = access.cacert.or_else(|| Some(pki.join("ca.crt")));
        if access.cert.is_none() && access.key.is_none() {
            access.cert = Some(pki.join("healthcheck-client.crt"));
            access.key = Some(pki.join("healthcheck-client.key"));
        }
        access.kubeadm = Some(pki.clone());
    }
    access.endpoints = endpoints;
    access
}

impl EtcdAccess {
    /// Whether these settings can work, with the fix named when they cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        let https = self.endpoints.iter().filter(|endpoint| endpoint.starts_with("https://")).count();
        if https > 0 && https < self.endpoints.len() {
            return Err(ConfigError::Invalid {
                what: "--endpoints",
                value: self.endpoints.join(","),
                hint: "mix of http:// and https://: every member of one cluster serves clients the same way".into(),
            });
        }
        let tls_files = self.cacert.is_some() || self.cert.is_some() || self.key.is_some();
        if https > 0 && self.cacert.is_none() {
            return Err(ConfigError::Invalid {
                what: "--endpoints",
                value: self.endpoints.join(","),
                hint: format!(
                "https:// needs the CA that signed etcd's server certificates: pass --cacert FILE (LIFEBOAT_CACERT, \
                 `cacert` in the config file); on a kubeadm node that is {KUBEADM_PKI}/ca.crt, or pass --kubeadm"
            ),
            });
        }
        if https == 0 && tls_files && !self.endpoints.is_empty() {
            return Err(ConfigError::Invalid {
                what: "--endpoints",
                value: self.endpoints.join(","),
                hint:
                    "--cacert/--cert/--key are for https:// endpoints: use the https:// client URLs etcd serves TLS on"
                        .into(),
            });
        }
        match (&self.cert, &self.key) {
            (Some(_), None) => return Err(missing_pair("--key FILE", "the client certificate's private key")),
            (None, Some(_)) => return Err(missing_pair("--cert FILE", "the client certificate for that key")),
            _ => {}
        }
        if let Some(user) = &self.user {
            if user.contains(':') {
                return Err(ConfigError::Invalid {
                    what: "--user",
                    value: user.split(':').next().unwrap_or_default().to_owned() + ":<redacted>",
                    hint: "give the user name only: a password on the command line shows in `ps`; put it in \
                       LIFEBOAT_PASSWORD or a file named by --password-file"
                        .into(),
                });
            }
            if user.is_empty() {
                return Err(ConfigError::Invalid {
                    what: "--user",
                    value: user.clone(),
                    hint: "name an etcd user".into(),
                });
            }
            if self.password.is_none() {
                return Err(ConfigError::Missing {
                    what: "the password of --user",
                    flag: "--password-file FILE",
                    env: "LIFEBOAT_PASSWORD",
                    key: "password-file",
                });
            }
        }
        Ok(())
    }
}

fn missing_pair(flag: &'static str, what: &'static str) -> ConfigError {
    ConfigError::Invalid {
        what: "client certificate",
        value: flag.to_owned(),
        hint: format!("--cert and --key go together: pass {flag} ({what})"),
    }
}

/// Reads a PEM file the settings name, checking it holds what its flag promises.
fn read_pem(path: &Path, flag: &'static str, marker: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN ") || !text.contains(marker) {
        return Err(ConfigError::Invalid {
            what: flag,
            value: path.display().to_string(),
            hint: format!("expected a PEM file with a {marker} block"),
        });
    }
    Ok(bytes)
}

impl EtcdAccess {
    /// The certificates, key and password, checked and read now.
    pub fn security(&self) -> Result<EtcdSecurity, ConfigError> {
        self.check()?;
        let ca_pem = self.cacert.as_deref().map(|path| read_pem(path, "--cacert", "CERTIFICATE")).transpose()?;
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                Some((read_pem(cert, "--cert", "CERTIFICATE")?, read_pem(key, "--key", "PRIVATE KEY")?))
            }
            _ => None,
        };
        let user = match (&self.user, &self.password) {
            (Some(name), Some(Password::Environment(password))) => {
                Some(EtcdUser { name: name.clone(), password: password.clone() })
            }
            (Some(name), Some(Password::File(path))) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                let password = text.trim_end_matches(['\n', '\r']).to_owned();
                if password.is_empty() {
                    return Err(ConfigError::Invalid {
                        what: "--password-file",
                        value: path.display().to_string(),
                        hint: "the file is empty: put the etcd user's password in it".into(),
                    });
                }
                Some(EtcdUser { name: name.clone(), password })
            }
            _ => None,
        };
        Ok(EtcdSecurity { ca_pem, identity, user })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn common(args: &[&str]) -> Common {
        let mut argv = vec!["lifeboat"];
        argv.extend_from_slice(args);
        argv.push("check");
        crate::cli::args::Cli::try_parse_from(argv).unwrap().common
    }

    fn access(args: &[&str], password: Option<&str>) -> Result<EtcdAccess, ConfigError> {
        let common = common(args);
        let endpoints = super::super::config::parse_endpoints(&common.endpoints).unwrap();
        let access = resolve_with(&common, &FileConfig::default(), endpoints, password.map(str::to_owned));
        access.check().map(|()| access)
    }

    #[test]
    fn https_needs_a_ca_and_names_the_fix() {
        let error = access(&["--endpoints", "https://10.0.0.1:2379", "--kubeadm-pki", "/nonexistent"], None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--cacert") && error.contains("--kubeadm"), "{error}");
        let ok =
            access(&["--endpoints", "https://10.0.0.1:2379", "--cacert", "/ca.pem", "--kubeadm-pki", "/none"], None)
                .unwrap();
        assert_eq!(ok.cacert.as_deref(), Some(Path::new("/ca.pem")));
    }

    #[test]
    fn tls_files_are_refused_for_plain_http_and_mixed_schemes() {
        let error = access(&["--endpoints", "http://a:2379", "--cacert", "/ca.pem"], None).unwrap_err().to_string();
        assert!(error.contains("https://"), "{error}");
        let error = access(&["--endpoints", "http://a:2379,https://b:2379", "--cacert", "/ca.pem"], None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("mix"), "{error}");
    }

    #[test]
    fn a_certificate_needs_its_key() {
        let error = access(&["--endpoints", "https://a:2379", "--cacert", "/ca", "--cert", "/c"], None).unwrap_err();
        assert!(error.to_string().contains("--key"), "{error}");
        let error = access(&["--endpoints", "https://a:2379", "--cacert", "/ca", "--key", "/k"], None).unwrap_err();
        assert!(error.to_string().contains("--cert"), "{error}");
    }

    #[test]
    fn a_password_never_comes_from_a_flag_and_never_shows() {
        let error = access(&["--endpoints", "http://a:2379", "--user", "root:secret"], None).unwrap_err().to_string();
        assert!(!error.contains("secret") && error.contains("LIFEBOAT_PASSWORD"), "{error}");
        let error = access(&["--endpoints", "http://a:2379", "--user", "root"], None).unwrap_err().to_string();
        assert!(error.contains("--password-file") && error.contains("LIFEBOAT_PASSWORD"), "{error}");
        let ok = access(&["--endpoints", "http://a:2379", "--user", "root"], Some("s3cret")).unwrap();
        assert!(!format!("{ok:?}").contains("s3cret"));
        let security = ok.security().unwrap();
        assert_eq!(security.user.as_ref().map(|user| user.password.as_str()), Some("s3cret"));
        assert!(!format!("{security:?}").contains("s3cret"));
    }

    #[test]
    fn kubeadm_layout_is_the_default_when_present() {
        let directory = tempfile::tempdir().unwrap();
        let pki = directory.path().to_str().unwrap();
        // Absent: nothing changes.
        let plain = access(&["--kubeadm-pki", pki], None).unwrap();
        assert!(plain.endpoints.is_empty() && plain.kubeadm.is_none());
        std::fs::write(directory.path().join("ca.crt"), "x").unwrap();
        let detected = access(&["--kubeadm-pki", pki], None).unwrap();
        assert_eq!(detected.endpoints, vec![KUBEADM_ENDPOINT.to_owned()]);
        assert_eq!(detected.cacert, Some(directory.path().join("ca.crt")));
        assert_eq!(detected.cert, Some(directory.path().join("healthcheck-client.crt")));
        assert_eq!(detected.key, Some(directory.path().join("healthcheck-client.key")));
        // Explicit endpoints turn detection off; --kubeadm turns it back on, flags still win.
        let explicit = access(&["--kubeadm-pki", pki, "--endpoints", "http://a:2379"], None).unwrap();
        assert!(explicit.kubeadm.is_none());
        let forced =
            access(&["--kubeadm", "--kubeadm-pki", pki, "--endpoints", "https://b:2379", "--cacert", "/mine"], None)
                .unwrap();
        assert_eq!(forced.endpoints, vec!["https://b:2379".to_owned()]);
        assert_eq!(forced.cacert.as_deref(), Some(Path::new("/mine")));
        // A bad PEM is named with its flag.
        let error = detected.security().unwrap_err().to_string();
        assert!(error.contains("--cacert") && error.contains("PEM"), "{error}");
    }
}
