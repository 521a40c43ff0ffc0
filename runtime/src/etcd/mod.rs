//! etcd as lifeboat talks to it: the real client adapter (`client`, etcd-client),
//! the revision log's watch and replay (`log`), whether the local member leads (`leader`),
//! and the cluster health report `lifeboat check` prints (`health`), which works
//! over any [`crate::ports::EtcdCluster`].

#[cfg(feature = "real")]
mod client;
pub mod health;
#[cfg(feature = "real")]
pub mod leader;
#[cfg(feature = "real")]
pub mod log;

#[cfg(feature = "real")]
pub use client::{EtcdClient, EtcdSecurity, EtcdUser};
