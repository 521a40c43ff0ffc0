//! The small files lifeboat keeps on this host, each written whole or not at
//! all: in the agent's state dir, the recovery epoch its data belongs to and the
//! epoch it holds its member stopped for; beside the data dir (so moving the data
//! dir aside keeps them), a replacement's progress and the lock that keeps two
//! processes on one host from running it at once.

use crate::member::{write_atomically, MemberError, MemberSpec};
use crate::ports::StateDir;
use std::path::{Path, PathBuf};

/// The agent's state dir (`--state-dir`): the production [`StateDir`], and the
/// simulator's, on each simulated machine's scratch dir.
#[derive(Clone, Debug)]
pub struct FsStateDir {
    dir: PathBuf,
}

const EPOCH_FILE: &str = "epoch";
const HOLDING_FILE: &str = "holding-epoch";

impl FsStateDir {
    pub fn new(dir: PathBuf) -> FsStateDir {
        FsStateDir { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// Removes `path`; `Ok(false)` when there was nothing to remove.
fn remove_if_present(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// The number a state-dir file starts with (more may follow it, as earlier
/// versions wrote); absent or unreadable reads as `None`.
fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok().and_then(|text| text.split_whitespace().next()?.parse().ok())
}

impl StateDir for FsStateDir {
    fn epoch(&self) -> u64 {
        read_number(&self.dir.join(EPOCH_FILE)).unwrap_or(0)
    }

    fn set_epoch(&self, epoch: u64) -> Result<(), MemberError> {
        write_atomically(&self.dir.join(EPOCH_FILE), epoch.to_string().as_bytes())
    }

    fn holding(&self) -> Option<u64> {
        read_number(&self.dir.join(HOLDING_FILE))
    }

    fn set_holding(&self, epoch: Option<u64>) -> Result<(), MemberError> {
        let path = self.dir.join(HOLDING_FILE);
        match epoch {
            Some(epoch) => write_atomically(&path, epoch.to_string().as_bytes()),
            None => match remove_if_present(&path) {
                Err(source) => Err(MemberError::Io { operation: "remove", path, source }),
                Ok(_) => Ok(()),
            },
        }
    }
}

/// The recovery epoch the member's data in `state_dir` belongs to (0: none yet).
pub fn read_epoch(state_dir: &Path) -> u64 {
    FsStateDir::new(state_dir.to_owned()).epoch()
}

/// The epoch the agent with `state_dir` holds its member stopped for, if any;
/// systemd's `ExecStartPre` (and the simulator's supervisor) start nothing then.
pub fn read_holding(state_dir: &Path) -> Option<u64> {
    FsStateDir::new(state_dir.to_owned()).holding()
}

/// `<data dir><suffix>`: beside the data dir, so moving the data dir aside keeps it.
fn beside_data_dir(spec: &MemberSpec, suffix: &str) -> PathBuf {
    let mut path = spec.data_dir.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

/// Where a replacement records its progress.
pub fn replacement_state_path(spec: &MemberSpec) -> PathBuf {
    beside_data_dir(spec, ".lifeboat-replace.json")
}

/// Why a replacement's files could not be used: the path and what went wrong.
#[derive(Debug)]
pub struct FileProblem {
    pub path: PathBuf,
    pub detail: String,
}

/// Held by the one process on this host that changes its member's data dir: a
/// replacement, or a restore into a recovery epoch. The agent, `lifeboat replace`
/// and `lifeboat reconfigure` (systemd's ExecStartPre) take it; while another
/// process holds it, `reconfigure` leaves etcd's launch to that process.
/// The agent resuming a replacement and a manual `lifeboat replace` hold the etcd
/// lock under the same name (so a restarted agent can take its own lock back);
/// only this tells them apart. The OS drops it when the process exits or dies.
#[derive(Debug)]
pub struct LocalGuard {
    _file: std::fs::File,
    start_marker: PathBuf,
}

impl LocalGuard {
    /// Says, until the returned value is dropped, that the lock holder has written
    /// etcd's launch settings and is starting etcd itself. Under systemd its
    /// `systemctl start` runs `reconfigure` as ExecStartPre, which lets etcd start
    /// only then: any other start while the lock is held (`Restart=` after a crash,
    /// an operator's `systemctl start`) meets a data dir in the middle of a change,
    /// or a launch written for the cluster before it, and is refused (nemesis seed
    /// 100000141928: etcd bootstrapped `new` on a wiped disk while its agent held
    /// the lock to restore it into a recovery epoch).
    pub fn prepare_start(&self) -> Result<StartPrepared, FileProblem> {
        write_atomically(&self.start_marker, format!("{}\n", std::process::id()).as_bytes())
            .map_err(|error| FileProblem { path: self.start_marker.clone(), detail: error.to_string() })?;
        Ok(StartPrepared { path: self.start_marker.clone() })
    }
}

/// The lock holder is starting etcd with the launch it prepared (see
/// [`LocalGuard::prepare_start`]); dropped, it no longer is.
#[derive(Debug)]
pub struct StartPrepared {
    path: PathBuf,
}

impl Drop for StartPrepared {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The host-local member lock's file.
pub fn member_lock_path(spec: &MemberSpec) -> PathBuf {
    beside_data_dir(spec, ".lifeboat-member.lock")
}

/// The marker a lock holder keeps while it starts etcd itself.
pub fn start_prepared_path(spec: &MemberSpec) -> PathBuf {
    beside_data_dir(spec, ".lifeboat-start-prepared")
}

/// Takes the host-local member lock; `Ok(None)` when another process holds it.
pub fn lock_member(spec: &MemberSpec) -> Result<Option<LocalGuard>, FileProblem> {
    let path = member_lock_path(spec);
    let problem = |detail: String| FileProblem { path: path.clone(), detail };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| problem(error.to_string()))?;
    match file.try_lock() {
        Ok(()) => {
            // Left by a holder that died while starting etcd: it says nothing now.
            let start_marker = start_prepared_path(spec);
            if let Err(error) = remove_if_present(&start_marker) {
                return Err(FileProblem { path: start_marker, detail: error.to_string() });
            }
            Ok(Some(LocalGuard { _file: file, start_marker }))
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(error)) => Err(problem(error.to_string())),
    }
}

/// Whether another process holds this member's lock right now (it is replacing
/// or restoring the member and will start etcd itself). Probes without keeping it.
pub fn member_locked_elsewhere(spec: &MemberSpec) -> bool {
    match std::fs::OpenOptions::new().write(true).open(member_lock_path(spec)) {
        Ok(file) => matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// Whether the process holding this member's lock is starting etcd with the launch
/// it prepared (see [`LocalGuard::prepare_start`]). Only meaningful while the lock
/// is held elsewhere: a marker without a holder is stale.
pub fn start_prepared_elsewhere(spec: &MemberSpec) -> bool {
    start_prepared_path(spec).exists()
}

/// The replacement's recorded progress, if any.
pub fn load_replacement<T: serde::de::DeserializeOwned>(spec: &MemberSpec) -> Result<Option<T>, FileProblem> {
    let path = replacement_state_path(spec);
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|error| FileProblem { path, detail: error.to_string() })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(FileProblem { path, detail: error.to_string() }),
    }
}

/// Records the replacement's progress, whole or not at all.
pub fn save_replacement<T: serde::Serialize>(spec: &MemberSpec, state: &T) -> Result<(), FileProblem> {
    let path = replacement_state_path(spec);
    let body = serde_json::to_vec_pretty(state)
        .map_err(|error| FileProblem { path: path.clone(), detail: error.to_string() })?;
    write_atomically(&path, &body).map_err(|error| FileProblem { path, detail: error.to_string() })
}

/// The replacement is over: its progress file goes (a missing one is fine).
pub fn clear_replacement(spec: &MemberSpec) {
    let _ = std::fs::remove_file(replacement_state_path(spec));
}

/// A replacement begun in a cluster this member is leaving for a recovered one:
/// its member IDs name incarnations of the old cluster, and resumed in the new one
/// it would remove this member's own, healthy incarnation. Its progress file goes
/// before the data dir is touched; `Ok(true)` when there was one.
pub fn abandon_replacement(spec: &MemberSpec) -> Result<bool, FileProblem> {
    let path = replacement_state_path(spec);
    remove_if_present(&path)
        .map_err(|error| FileProblem { path, detail: format!("{error}; remove it by hand, then let the agent retry") })
}

/// Whether a replacement of this member is under way (its progress file exists).
pub fn replacement_in_progress(spec: &MemberSpec) -> bool {
    replacement_state_path(spec).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_in(dir: &Path) -> MemberSpec {
        MemberSpec {
            name: "m0".into(),
            data_dir: dir.join("data"),
            client_url: "http://127.0.0.1:2379".into(),
            peer_url: "http://127.0.0.1:2380".into(),
            extra_args: Vec::new(),
        }
    }

    #[test]
    fn a_held_replacement_lock_is_seen_from_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path());
        assert!(!member_locked_elsewhere(&spec), "no lock file yet");
        let guard = lock_member(&spec).unwrap().expect("free");
        assert!(member_locked_elsewhere(&spec));
        drop(guard);
        assert!(!member_locked_elsewhere(&spec));
        assert!(lock_member(&spec).unwrap().is_some(), "probing leaves it free");
    }

    #[test]
    fn only_the_holders_own_start_is_marked_prepared() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path());
        let guard = lock_member(&spec).unwrap().expect("free");
        assert!(!start_prepared_elsewhere(&spec), "holding the lock is not starting");
        let starting = guard.prepare_start().unwrap();
        assert!(start_prepared_elsewhere(&spec));
        drop(starting);
        assert!(!start_prepared_elsewhere(&spec), "the start is over");
        // A holder that died while starting leaves its marker; the next holder clears it.
        std::mem::forget(guard.prepare_start().unwrap());
        drop(guard);
        assert!(start_prepared_elsewhere(&spec));
        let _next = lock_member(&spec).unwrap().expect("free");
        assert!(!start_prepared_elsewhere(&spec), "a stale marker goes with the next lock");
    }

    #[test]
    fn state_dir_round_trips_and_reads_older_files() {
        let directory = tempfile::tempdir().unwrap();
        let state = FsStateDir::new(directory.path().join("state"));
        assert_eq!((state.epoch(), state.holding()), (0, None));
        state.set_epoch(3).unwrap();
        state.set_holding(Some(4)).unwrap();
        assert_eq!((state.epoch(), state.holding()), (3, Some(4)));
        state.set_holding(None).unwrap();
        state.set_holding(None).unwrap();
        assert_eq!(state.holding(), None);
        // Earlier versions wrote "<epoch> <more>"; the number leads.
        std::fs::write(state.path().join(HOLDING_FILE), "7 90").unwrap();
        assert_eq!(read_holding(state.path()), Some(7));
        std::fs::write(state.path().join(EPOCH_FILE), "garbage").unwrap();
        assert_eq!(read_epoch(state.path()), 0);
    }
}
