//! The command line: raw flags as clap parses them (`args`), the settings they
//! become once validated (`config`), and how results are printed (`output`).

pub mod args;
pub mod config;
pub mod etcd_access;
pub mod output;
