//! The command line: its arguments (`args`), and the commands that are not the daemon itself:
//! `get` and `status` over the socket (`client`), `check`, `prepare-dirs` and `dev` (the
//! built-in development issuer).

mod args;
pub mod check;
pub mod client;
pub mod dev;
pub mod prepare_dirs;

pub use args::*;
