//! Strategies that choose which operation advances, one per file, as in shuttle:
//!
//! - [`dfs`]: every schedule, depth first (stateless: each schedule runs from the start, replaying
//!   the prefix of the one before and taking the next unexplored branch).
//! - [`pct`]: randomized priority schedules (PCT, Burckhardt et al. 2010) from a printed seed.
//! - [`replay`]: a recorded list of choices, exactly.

pub mod dfs;
pub mod pct;
pub mod replay;

pub use dfs::Dfs;
pub use pct::Pct;
pub use replay::Replay;
