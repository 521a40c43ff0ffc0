//! Backups themselves: save a snapshot to the store (`save`), list and judge what
//! the store holds (`catalog`), check a downloaded snapshot (`verify`), build a
//! data dir from one (`restore`), and mark one proven by a trial restore
//! (`proof`). Generic over the ports, so the agent and the simulator run the
//! same code. `trial` (a trial restore: restore, start, compare
//! HashKV), `prover` (the agent's trials of new snapshots) and `scratch` (the
//! throwaway member trials and log replays start) run a real etcd, so they exist
//! only in the real build.

pub mod catalog;
pub mod proof;
#[cfg(feature = "real")]
pub mod prover;
pub mod restore;
pub mod save;
#[cfg(feature = "real")]
pub mod scratch;
#[cfg(feature = "real")]
pub mod trial;
pub mod verify;
