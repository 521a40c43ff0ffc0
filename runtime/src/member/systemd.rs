//! etcd as a systemd unit (production): launch settings go to the environment
//! file the unit reads (`EnvironmentFile=`), as etcd reads `ETCD_*`.

use super::{write_atomically, Launch, MemberError, MemberSpec};
use crate::ports::LocalMember;
use std::path::PathBuf;

/// etcd as a systemd unit (default `etcd-member.service`, as on kube-aws).
pub struct SystemdMember {
    spec: MemberSpec,
    unit: String,
    /// Written before each start; the unit reads it with `EnvironmentFile=`.
    environment_file: PathBuf,
}

impl SystemdMember {
    pub fn new(spec: MemberSpec, unit: String, environment_file: PathBuf) -> SystemdMember {
        SystemdMember { spec, unit, environment_file }
    }

    async fn systemctl(&self, verb: &'static str) -> Result<std::process::Output, MemberError> {
        tokio::process::Command::new("systemctl")
            .arg(verb)
            .arg(&self.unit)
            .output()
            .await
            .map_err(|source| MemberError::Systemd { verb, unit: self.unit.clone(), detail: source.to_string() })
    }
}

impl SystemdMember {
    /// `systemctl VERB UNIT`, where a non-zero exit is an error carrying systemctl's stderr.
    async fn systemctl_checked(&self, verb: &'static str) -> Result<(), MemberError> {
        let output = self.systemctl(verb).await?;
        if output.status.success() {
            return Ok(());
        }
        Err(MemberError::Systemd {
            verb,
            unit: self.unit.clone(),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// The `ETCD_*` environment for one launch (etcd reads these like its flags).
pub fn environment(spec: &MemberSpec, launch: &Launch) -> String {
    format!(
        "ETCD_NAME={}\nETCD_DATA_DIR={}\nETCD_LISTEN_CLIENT_URLS={}\nETCD_ADVERTISE_CLIENT_URLS={}\nETCD_LISTEN_PEER_URLS={}\nETCD_INITIAL_ADVERTISE_PEER_URLS={}\nETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_CLUSTER_STATE={}\nETCD_INITIAL_CLUSTER_TOKEN={}\n",
        spec.name,
        spec.data_dir.display(),
        spec.client_url,
        spec.client_url,
        spec.peer_url,
        spec.peer_url,
        launch.initial_cluster,
        launch.initial_cluster_state,
        launch.initial_cluster_token
    )
}

impl LocalMember for SystemdMember {
    fn spec(&self) -> &MemberSpec {
        &self.spec
    }

    async fn is_running(&self) -> bool {
        self.systemctl("is-active").await.is_ok_and(|output| output.status.success())
    }

    async fn start(&self, launch: &Launch) -> Result<(), MemberError> {
        write_atomically(&self.environment_file, environment(&self.spec, launch).as_bytes())?;
        self.systemctl_checked("start").await
    }

    async fn stop(&self) -> Result<(), MemberError> {
        self.systemctl_checked("stop").await
    }
}

/// The member as seen from `lifeboat reconfigure` in a unit's ExecStartPre:
/// systemd is starting etcd right now, so "start" only writes the launch
/// settings, and "stop" has nothing to do.
pub struct EnvironmentFileMember {
    spec: MemberSpec,
    environment_file: PathBuf,
}

impl EnvironmentFileMember {
    pub fn new(spec: MemberSpec, environment_file: PathBuf) -> EnvironmentFileMember {
        EnvironmentFileMember { spec, environment_file }
    }
}

impl LocalMember for EnvironmentFileMember {
    fn spec(&self) -> &MemberSpec {
        &self.spec
    }
    async fn is_running(&self) -> bool {
        false
    }
    async fn start(&self, launch: &Launch) -> Result<(), MemberError> {
        write_atomically(&self.environment_file, environment(&self.spec, launch).as_bytes())
    }
    async fn stop(&self) -> Result<(), MemberError> {
        Ok(())
    }
}
