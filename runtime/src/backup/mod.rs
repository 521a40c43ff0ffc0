//! Backups themselves: save a snapshot to the store (`save`), list and judge what
//! the store holds (`catalog`), check a downloaded snapshot (`verify`), and build
//! a data dir from one (`restore`). Generic over the ports, so the agent and the
//! simulator run the same code. `trial` (a trial restore: restore, start, compare
//! HashKV) and `scratch` (the throwaway member it and a log replay start) run a
//! real etcd, so they exist only in the real build.

pub mod catalog;
pub mod restore;
pub mod save;
#[cfg(feature = "real")]
pub mod scratch;
#[cfg(feature = "real")]
pub mod trial;
pub mod verify;
