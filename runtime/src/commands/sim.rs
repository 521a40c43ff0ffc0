//! `lifeboat sim`: runs the simulator, which is built separately (`scripts/sim`).

use crate::exit::Exit;
use anyhow::Context;

/// Where `lifeboat-sim` may be: beside this binary, in $PATH, or where scripts/sim builds it.
fn find_simulator() -> Option<std::path::PathBuf> {
    let name = "lifeboat-sim";
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join(name)));
    let in_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sim/release").join(name);
    beside.into_iter().chain(in_path).chain(std::iter::once(built)).find(|path| path.is_file())
}

pub fn run(args: &[String]) -> anyhow::Result<Exit> {
    let Some(simulator) = find_simulator() else {
        eprintln!(
            "error: lifeboat-sim not found (beside this binary, in $PATH, or in target/sim/release).\n\
             It is built separately with --cfg madsim: run scripts/sim from a lifeboat checkout."
        );
        return Ok(Exit::Usage);
    };
    let status = std::process::Command::new(&simulator)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {}", simulator.display()))?;
    Ok(match status.code() {
        Some(0) => Exit::Success,
        Some(2) => Exit::Usage,
        _ => Exit::Failure,
    })
}
