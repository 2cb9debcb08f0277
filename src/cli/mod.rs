//! The command line: its arguments (`args`), `main` (each command run, and how it ended turned
//! into the exit status: `exit`), and the commands that are not the daemon itself: `get` and
//! `status` over the socket (`client`), `check`, `prepare-dirs` and `dev` (the built-in
//! development issuer).

mod args;
pub(crate) mod check;
pub(crate) mod client;
pub mod dev;
mod exit;
pub(crate) mod prepare_dirs;

pub use args::*;
pub use exit::main;
