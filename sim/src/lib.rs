//! lifeboat's deterministic simulator. The production agent driver
//! (`lifeboat_runtime::agent::Driver`) and the pure core run unchanged over
//! simulated ports: an etcd cluster model, an S3-like store, machines in network
//! zones, all on madsim's virtual time and seeded randomness. The scenario
//! catalogue (`lifeboat-scenarios`) drives the faults; invariants of
//! docs/DESIGN.md are checked as the state changes and at the end of every run.
//!
//! Everything here needs `--cfg madsim` (`scripts/sim` builds it so).
#![cfg(madsim)]
#![allow(async_fn_in_trait)]

pub mod etcdadm;
pub mod flaws;
pub mod model;
pub mod nemesis;
pub mod ports;
pub mod revlog;
pub mod run;
pub mod summary;
pub mod systemd;
