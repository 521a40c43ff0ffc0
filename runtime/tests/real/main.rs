//! Integration tests against real components: etcd clusters, a real S3 server
//! (SeaweedFS), `etcdutl`, and the `lifeboat` binary as users run it. One test
//! binary, so the dependency tree links once.

mod support;

mod alerts;
mod chaos;
mod cli;
mod encryption;
mod failures;
mod packaging;
mod revlog;
mod save_restore;
mod secrets;
mod store;
mod tls;
mod trial;
