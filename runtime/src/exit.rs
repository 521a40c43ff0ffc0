//! Exit codes scripts can rely on. Documented in `lifeboat --help` and README.md.

use std::process::ExitCode;

/// Every way `lifeboat` ends. Values are stable: systemd units and scripts test them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done; for `check`, every member is healthy.
    Success = 0,
    /// An unexpected error (a bug or an unclassified failure).
    Failure = 1,
    /// Bad flags, config file or environment: nothing was touched.
    Usage = 2,
    /// `check`: at least one member is unhealthy (the cluster may still have quorum).
    Unhealthy = 3,
    /// etcd could not be reached, or has no quorum for the operation.
    Etcd = 4,
    /// The store (S3 or directory) could not be reached or refused the request.
    Store = 5,
    /// A snapshot failed verification (hash mismatch, truncated, not an etcd snapshot).
    Corrupt = 6,
    /// The named snapshot, key or bucket does not exist.
    NotFound = 7,
    /// A local precondition refused the operation (e.g. the data dir is not empty).
    Refused = 8,
}

impl Exit {
    pub const HELP: &'static str = "Exit codes: 0 success (check: all healthy), 1 unexpected error, 2 bad usage or config, \
3 check found an unhealthy member, 4 etcd unreachable or without quorum, 5 store unreachable or refused, \
6 snapshot failed verification, 7 snapshot/key/bucket not found, 8 refused by a local precondition (e.g. data dir not empty).";
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// Errors that know which exit code they deserve.
pub trait Classify {
    fn exit(&self) -> Exit;
}
