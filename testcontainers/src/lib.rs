//! lifeboat in containers: real etcd, a real S3 server and real agents in
//! locally built Docker images on a private network, with faults at container
//! level (kill, stop/start, pause, network disconnect, a lost machine).
//!
//! The images are built here from the static etcd and SeaweedFS binaries that
//! `scripts/install-deps` installs and this workspace's `lifeboat` (see
//! [`images`]); `LIFEBOAT_ETCD_IMAGE`, `LIFEBOAT_S3_IMAGE` (+ `LIFEBOAT_S3_FLAVOUR`)
//! and `LIFEBOAT_AGENT_IMAGE` swap in other images, e.g. the official etcd and
//! MinIO images where a registry is reachable.

pub mod cluster;
pub mod images;
pub mod watchdog;
