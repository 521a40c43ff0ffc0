//! The recovery core of lifeboat, an etcd backup and disaster-recovery agent.
//!
//! This crate is fully deterministic: it has no networking or storage code, no
//! async, reads no clock and draws no randomness. Time comes in as a [`Millis`]
//! value on every entry point; what the outside world did comes in as plain data
//! (an [`Observation`], an [`Outcome`]); what should happen next comes out as plain
//! data (an [`Action`]). The production runtime and the simulator are thin
//! drivers around [`Agent`], so the same decisions are proven in simulation and
//! taken in production.
//!
//! The core cannot fail: an etcd timeout or an S3 error reaches it as an
//! observation, never as a `Result`.
// Store listings and network input are untrusted: no slicing or indexing that can
// panic outside tests (`.get()`, `strip_prefix`, iterators instead).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

pub mod agent;
pub mod health;
pub mod layout;
pub mod membership;
pub mod policy;
pub mod reconfigure;
pub mod recovery;
pub mod replacement;
pub mod retention;
pub mod revlog;
pub mod snapshot;
pub mod time;
pub mod types;

pub use agent::{Action, Agent, Observation, Outcome, StoreObservation, Warning};
pub use health::FailureTracker;
pub use layout::StoreLayout;
pub use policy::{Policy, Retention};
pub use snapshot::{Compression, KvHash, Manifest, SnapshotMeta, SnapshotName};
pub use time::Millis;
pub use types::{Member, MemberHealth, MemberId, Revision};
