//! etcd as a child process the agent supervises (the demo and the tests).

use super::{io_error, Launch, MemberError, MemberSpec};
use crate::ports::LocalMember;
use std::path::PathBuf;
use std::time::Duration;

/// etcd as a child of this process.
pub struct ChildMember {
    spec: MemberSpec,
    etcd: PathBuf,
    log: Option<PathBuf>,
    child: tokio::sync::Mutex<Option<tokio::process::Child>>,
}

impl ChildMember {
    pub fn new(spec: MemberSpec, etcd: PathBuf, log: Option<PathBuf>) -> ChildMember {
        ChildMember { spec, etcd, log, child: tokio::sync::Mutex::new(None) }
    }
}

impl LocalMember for ChildMember {
    fn spec(&self) -> &MemberSpec {
        &self.spec
    }

    async fn is_running(&self) -> bool {
        let mut child = self.child.lock().await;
        match child.as_mut() {
            Some(process) => matches!(process.try_wait(), Ok(None)),
            None => false,
        }
    }

    async fn start(&self, launch: &Launch) -> Result<(), MemberError> {
        let mut child = self.child.lock().await;
        if let Some(process) = child.as_mut() {
            if matches!(process.try_wait(), Ok(None)) {
                return Ok(());
            }
        }
        let spec = &self.spec;
        let mut command = tokio::process::Command::new(&self.etcd);
        command
            .arg("--name")
            .arg(&spec.name)
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .args(["--listen-client-urls", &spec.client_url, "--advertise-client-urls", &spec.client_url])
            .args(["--listen-peer-urls", &spec.peer_url, "--initial-advertise-peer-urls", &spec.peer_url])
            .args(["--initial-cluster", &launch.initial_cluster])
            .args(["--initial-cluster-state", &launch.initial_cluster_state])
            .args(["--initial-cluster-token", &launch.initial_cluster_token])
            .args(&spec.extra_args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to signal the
        // child when its parent dies, so a killed agent never leaves an orphaned etcd.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        match &self.log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io_error("open log", path))?;
                let copy = file.try_clone().map_err(io_error("open log", path))?;
                command.stdout(copy).stderr(file);
            }
            None => {
                command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
            }
        }
        let process = command
            .spawn()
            .map_err(|source| MemberError::Spawn { program: self.etcd.display().to_string(), source })?;
        tracing::info!(member = %spec.name, state = %launch.initial_cluster_state, token = %launch.initial_cluster_token, "started etcd");
        *child = Some(process);
        Ok(())
    }

    async fn stop(&self) -> Result<(), MemberError> {
        let mut child = self.child.lock().await;
        if let Some(mut process) = child.take() {
            if let Some(pid) = process.id() {
                // SAFETY: signal to our own child, which has not been reaped yet.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            if tokio::time::timeout(Duration::from_secs(15), process.wait()).await.is_err() {
                let _ = process.kill().await;
            }
            tracing::info!(member = %self.spec.name, "stopped etcd");
        }
        Ok(())
    }
}
