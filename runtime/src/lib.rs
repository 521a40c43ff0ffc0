//! The production runtime of lifeboat: adapters for real etcd and real object
//! stores behind small traits (ports), the save / restore / check machinery,
//! and the `lifeboat` command line.
//!
//! Only this crate knows etcd-client and aws-sdk-s3 types; they are converted to
//! the core's plain types at the edge.
#![allow(async_fn_in_trait)]
// The ports are used generically, never as trait objects.
// Store listings and network input are untrusted: no slicing or indexing that can
// panic outside tests (`.get()`, `strip_prefix`, iterators instead).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

pub mod agent;
pub mod backup;
#[cfg(feature = "real")]
pub mod cli;
#[cfg(feature = "real")]
pub mod commands;
pub mod etcd;
pub mod exit;
pub mod host;
pub mod member;
pub mod pipeline;
pub mod ports;
pub mod progress;
pub mod revlog;
pub mod store;
