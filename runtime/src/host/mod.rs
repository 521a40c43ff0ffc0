//! This host as lifeboat's machinery sees it: the system's clocks (`clock`) and
//! the small files lifeboat keeps on it (`files`: the agent's state dir, and a
//! replacement's progress and lock beside the data dir).
//!
//! With `member/` (etcd's process and data dir), `store/`, `etcd/`, the journal
//! and the command line, these are the adapters: nothing else in the runtime
//! touches the filesystem or asks the system what time it is. The simulator runs
//! these same adapters on each machine's scratch dir, and its own clock.

pub mod clock;
pub mod files;
