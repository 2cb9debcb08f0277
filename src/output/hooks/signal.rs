//! `signal` hooks: a signal to the process whose pid a pid file holds, after checking that the
//! file can be trusted and still names a live process of the file's owner. The file is opened
//! without following a symlink and must not be writable by group or others. Unless root owns
//! it, the process must run as the file's owner: a stale pid file whose number now belongs to
//! another user's process is refused, never signalled.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, geteuid};

use super::RunEnded;

/// A pid file larger than this is not a pid file.
const MAX_PID_FILE: u64 = 64;

pub fn send(signal: i32, pid_file: &Path) -> RunEnded {
    match try_send(signal, pid_file) {
        Ok(()) => RunEnded::Ok,
        Err(e) => RunEnded::Failed(e),
    }
}

fn try_send(signal: i32, pid_file: &Path) -> Result<(), String> {
    let shown = pid_file.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nofollow())
        .open(pid_file)
        .map_err(|e| format!("cannot open pid file {shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("pid file {shown}: {e}"))?;
    let me = geteuid().as_raw();
    if !meta.is_file() {
        return Err(format!("pid file {shown} is not a regular file"));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "pid file {shown} is writable by others (mode {:04o}); refusing to trust the pid in it",
            meta.mode() & 0o7777
        ));
    }
    let mut text = String::new();
    file.take(MAX_PID_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read pid file {shown}: {e}"))?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| format!("pid file {shown} does not hold a process id (found {:?})", text.trim()))?;
    let owner = match process_uid(pid) {
        Some(uid) => uid,
        // Not in /proc: gone, or hidden (systemd's ProtectProc=invisible shows only our own).
        None => match kill(Pid::from_raw(pid), None) {
            Err(Errno::ESRCH) => return Err(format!("no process {pid} (from {shown}): the pid file is stale")),
            _ if meta.uid() == 0 || meta.uid() == me => meta.uid(),
            _ => {
                return Err(format!(
                    "cannot see who owns process {pid} (from {shown}; /proc hides it, as ProtectProc=invisible does), so the pid file cannot be checked; not signalled"
                ));
            }
        },
    };
    // A pid file written by root may name any process (a root master that drops privileges);
    // any other must name a process of its own user, or the number was reused.
    if meta.uid() != 0 && owner != meta.uid() {
        return Err(format!(
            "process {pid} (from {shown}) belongs to uid {owner}, but the pid file to uid {}: the pid file is stale and its number reused; not signalled",
            meta.uid()
        ));
    }
    let signal = Signal::try_from(signal).map_err(|e| e.to_string())?;
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) => Ok(()),
        Err(Errno::EPERM) => Err(format!(
            "tokend (uid {me}) may not signal process {pid} (uid {owner}): run the consumer as tokend's user, or give tokend CAP_KILL"
        )),
        Err(Errno::ESRCH) => Err(format!("process {pid} (from {shown}) is gone")),
        Err(e) => Err(format!("cannot signal process {pid}: {e}")),
    }
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// The real uid of process `pid`, if it exists (from `/proc/PID/status`).
fn process_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
}
