//! Publishing tokens to files: what goes into a file (`format`) and how it is replaced without a
//! reader ever seeing a partial or empty file (`atomic`).

pub(crate) mod atomic;
pub mod format;
pub mod hooks;
pub(crate) mod lock;

use std::io;

use crate::config::Output;
use crate::token::Token;

/// Who besides tokend may write a directory of `mode`, if anyone may replace the files in it:
/// they could swap a token file between refreshes (a rename over it), unless the sticky bit keeps
/// them to their own files. `check` and every start warn about such an output directory.
pub fn replaceable_by(mode: u32) -> Option<&'static str> {
    if mode & 0o022 == 0 || mode & 0o1000 != 0 {
        return None;
    }
    Some(if mode & 0o002 != 0 { "every user" } else { "its group" })
}

/// What to say about a directory `replaceable_by` someone.
pub const REPLACEABLE_FIX: &str =
    "they could replace the token file between refreshes; give outputs a directory only tokend writes";

/// Renders `token` for `output` and atomically replaces the file, unless it already holds
/// exactly that (a restart that reuses the token; see `atomic::holds`).
pub fn write(output: &Output, token: &Token) -> io::Result<()> {
    let contents = format::render(output, token, std::time::SystemTime::now())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let target = atomic::Target {
        path: &output.path,
        mode: output.mode.bits(),
        owner: output.owner.as_ref().map(|o| o.id),
        group: output.group.as_ref().map(|g| g.id),
    };
    if atomic::holds(&target, &contents) {
        return Ok(());
    }
    atomic::write(&target, &contents)
}
