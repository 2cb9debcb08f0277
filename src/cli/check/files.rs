//! What `check` asks of the file system: directories tokend must write (or create), files the
//! service's user must read, and how to say that it may not.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Checking, Report, SERVICE_RUNTIME_DIR};
use crate::config::Output;
use crate::config::identity;

/// Checks that tokend can write into `dir` (or create it) and, for an output, give the file its
/// owner and group. Returns a short description for the plan.
/// `key` names the setting in findings; `what` starts their messages.
pub(super) fn check_dir(
    r: &mut Report,
    cx: &Checking<'_>,
    (key, what): (&str, &str),
    dir: &Path,
    output: Option<&Output>,
) -> String {
    if let Some(o) = output {
        let (owner, group) = cx.who.cannot_own(o.owner.as_ref(), o.group.as_ref());
        for p in owner.into_iter().chain(group) {
            r.problem(key, format!("{what}: {p}"));
        }
        // (The state directory, which the unit may write too, is no place for outputs: the
        // configuration refuses them there.)
        if cx.service && !dir.starts_with(SERVICE_RUNTIME_DIR) {
            r.warning(key, format!(
                "{what}: the packaged unit (ProtectSystem=strict) lets tokend write token files only under {SERVICE_RUNTIME_DIR}; \
                 for this output add `ReadWritePaths={}` in a drop-in (systemctl edit tokend)",
                dir.display()
            ));
        }
    }
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) => existing = p,
            None => break,
        }
    }
    let meta = match std::fs::metadata(existing) {
        Ok(meta) if meta.is_dir() => meta,
        _ => {
            r.problem(key, format!("{what}: {} is not a directory", existing.display()));
            return "blocked".into();
        }
    };
    if let Some(why) = unusable_file_system(existing) {
        r.problem(key, format!("{what}: {} {why}", existing.display()));
        return "blocked".into();
    }
    if !cx.who.may_write_dir(&meta) {
        r.problem(
            key,
            denied(cx, &format!("{what}: directory"), existing, "writable", &meta),
        );
        return "NOT WRITABLE".into();
    }
    if output.is_some()
        && let Some(who) = crate::output::replaceable_by(meta.mode())
    {
        r.warning(
            key,
            format!(
                "{what}: the directory {} (mode {:04o}) can be written by {who}: {}",
                existing.display(),
                meta.mode() & 0o7777,
                crate::output::REPLACEABLE_FIX
            ),
        );
    }
    if existing == dir {
        "directory writable".into()
    } else {
        format!("{} will be created", dir.display())
    }
}

/// Why files cannot be created under `dir` whatever its permissions say: a read-only mount, or a
/// kernel's virtual file system (`/proc`, `/sys`, …), where even root cannot create a file.
pub(super) fn unusable_file_system(dir: &Path) -> Option<String> {
    use nix::sys::statfs::*;
    if let Ok(vfs) = nix::sys::statvfs::statvfs(dir)
        && vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
    {
        return Some("is on a read-only file system".into());
    }
    let kind = statfs(dir).ok()?.filesystem_type();
    let virtual_fs = [
        (PROC_SUPER_MAGIC, "proc"),
        (SYSFS_MAGIC, "sysfs"),
        (CGROUP_SUPER_MAGIC, "cgroup"),
        (CGROUP2_SUPER_MAGIC, "cgroup2"),
        (DEVPTS_SUPER_MAGIC, "devpts"),
        (DEBUGFS_MAGIC, "debugfs"),
        (TRACEFS_MAGIC, "tracefs"),
        (SECURITYFS_MAGIC, "securityfs"),
        (BPF_FS_MAGIC, "bpf"),
        (NSFS_MAGIC, "nsfs"),
    ];
    virtual_fs
        .iter()
        .find(|(magic, _)| *magic == kind)
        .map(|(_, name)| format!("is on the kernel's {name} file system, where no file can be created; choose a directory such as /run/tokend"))
}

/// A file the service reads for every request (a secret, key, certificate or CA file) that its
/// user may not read: `run` would refuse to start although `check`, run by root, could read it.
pub(super) fn unreadable_by_service(cx: &Checking<'_>, what: &str, path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if cx.who.may_read(&meta) {
        return None;
    }
    let user = cx.who.name.clone().unwrap_or_else(|| cx.who.uid.to_string());
    let fix = match what {
        "client certificate" | "ca_file" => format!("; `chmod 0644 {}`", path.display()),
        _ => format!("; `chown {user} {}` (keep the mode 0600)", path.display()),
    };
    Some(denied(cx, what, path, "readable", &meta) + &fix)
}

/// `what path is not <how> by tokend (user …) (mode 0600, owner 0:root)`.
pub(super) fn denied(cx: &Checking<'_>, what: &str, path: &Path, how: &str, meta: &std::fs::Metadata) -> String {
    format!(
        "{what} {} is not {how} by {} (mode {:04o}, owner {}:{})",
        path.display(),
        cx.who,
        meta.mode() & 0o7777,
        meta.uid(),
        identity::group_name(meta.gid())
    )
}
