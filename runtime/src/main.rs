//! The `lifeboat` binary: parse the flags, run one command, exit with a code
//! scripts can test. Everything else is in the library: `cli` (flags and
//! validated settings), `commands` (one module per command), `exit` (the codes).
// Store listings and network input are untrusted: no slicing or indexing that can
// panic outside tests (`.get()`, `strip_prefix`, iterators instead).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use clap::Parser;
use lifeboat_runtime::cli::args::Cli;
use lifeboat_runtime::commands;
use lifeboat_runtime::exit::Exit;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { Exit::Usage.into() } else { Exit::Success.into() };
        }
    };
    init_logging(&cli.common.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return Exit::Failure.into();
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("error: {}", lifeboat_runtime::cli::output::error_chain(&error));
            commands::classify(&error).into()
        }
    }
}

fn init_logging(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}
