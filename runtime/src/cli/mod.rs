//! The command line: raw flags as clap parses them (`args`), the settings they
//! become once validated (`config`), how results are printed (`output`), and the
//! terminal's progress bar (`progress`).

pub mod args;
pub mod config;
pub mod etcd_access;
pub mod output;
pub mod progress;
