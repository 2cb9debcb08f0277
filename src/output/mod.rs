//! Publishing tokens to files: what goes into a file (`format`) and how it is replaced without a
//! reader ever seeing a partial or empty file (`atomic`).

pub mod atomic;
pub mod format;
pub mod lock;

use std::io;

use crate::config::Output;
use crate::token::Token;

/// Renders `token` for `output` and atomically replaces the file.
pub fn write(output: &Output, token: &Token) -> io::Result<()> {
    let contents = format::render(output, token, std::time::SystemTime::now())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    atomic::write(
        &atomic::Target {
            path: &output.path,
            mode: output.mode.bits(),
            owner: output.owner.as_ref().map(|o| o.id),
            group: output.group.as_ref().map(|g| g.id),
        },
        &contents,
    )
}
