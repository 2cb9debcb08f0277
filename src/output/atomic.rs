//! Atomic file replacement. A reader opening the target at any moment sees the complete old file
//! or the complete new one, never a partial or empty file, even if tokend is killed mid-write:
//!
//! 1. create a uniquely named temp file next to the target (`O_EXCL`, mode 0600);
//! 2. set its mode, then its owner and group, on the open descriptor, before any byte is written;
//! 3. write, then `fsync` the file;
//! 4. `rename` it over the target (atomic within a directory);
//! 5. `fsync` the directory, so the rename itself survives a crash.
//!
//! A killed run can leave a temp file behind; `stale_temps` finds those, for deletion at start-up.

use std::collections::HashSet;
use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode for parent directories tokend creates.
pub const DIR_MODE: u32 = 0o750;
const TEMP_INFIX: &str = ".tokend-";
const TEMP_SUFFIX: &str = ".tmp";
const TEMP_RANDOM_LEN: usize = 8;

/// A file to replace and the ownership it must have.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub path: &'a Path,
    pub mode: u32,
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

/// Atomically replaces `target.path` with `contents`. An error names the step and the path it
/// concerns (`cannot create directory /srv/x: Permission denied`), never only the errno.
pub fn write(target: &Target<'_>, contents: &[u8]) -> io::Result<()> {
    let (dir, name) = split(target.path)?;
    create_parents(dir, DIR_MODE)?;
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}{TEMP_INFIX}"))
        .suffix(TEMP_SUFFIX)
        .rand_bytes(TEMP_RANDOM_LEN)
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| context(e, "cannot create a file in", dir))?;
    let file = temp.as_file_mut();
    // Mode first, while tokend still owns the file: once it belongs to another user, changing the
    // mode would need CAP_FOWNER. (fchown only clears setuid/setgid bits, which modes never have.)
    file.set_permissions(Permissions::from_mode(target.mode))
        .map_err(|e| context(e, "cannot set the mode of a new file in", dir))?;
    if target.owner.is_some() || target.group.is_some() {
        std::os::unix::fs::fchown(&*file, target.owner, target.group)
            .map_err(|e| context(e, "cannot give its owner and group to a new file in", dir))?;
    }
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| context(e, "cannot write a new file in", dir))?;
    // On failure the temp file is deleted when `PersistError` drops.
    temp.persist(target.path)
        .map_err(|e| context(e.error, "cannot put the new file in place at", target.path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| context(e, "cannot sync directory", dir))
}

/// Whether `target.path` already is exactly what `write` would make it: a regular file with one
/// link, holding `contents`, with the mode, owner and group asked for (tokend's own when none
/// is set). A restart that reuses every saved token then rewrites (and syncs) no file: at 4,000
/// clients those fsyncs were most of the start-up. Anything else (a symlink, a FIFO, a hard
/// link, another owner, a mode changed by hand) is rewritten, as before.
pub fn holds(target: &Target<'_>, contents: &[u8]) -> bool {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let Ok(file) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(target.path)
    else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let owner = target.owner.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    let group = target.group.unwrap_or_else(|| nix::unistd::getegid().as_raw());
    if !meta.is_file()
        || meta.nlink() != 1
        || meta.mode() & 0o7777 != target.mode
        || (meta.uid(), meta.gid()) != (owner, group)
        || meta.len() != contents.len() as u64
    {
        return false;
    }
    let mut existing = zeroize::Zeroizing::new(Vec::with_capacity(contents.len()));
    file.take(contents.len() as u64 + 1).read_to_end(&mut existing).is_ok() && existing.as_slice() == contents
}

/// `e` with what was being done to `path`, keeping its kind.
fn context(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

/// Creates missing directories on the way to `dir` with `mode` exactly (not reduced by umask).
pub fn create_parents(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cursor = dir;
    while !cursor.exists() {
        missing.push(cursor.to_owned());
        match cursor.parent() {
            Some(parent) => cursor = parent,
            None => break,
        }
    }
    for path in missing.iter().rev() {
        match fs::DirBuilder::new().mode(mode).create(path) {
            Ok(()) => fs::set_permissions(path, Permissions::from_mode(mode))
                .map_err(|e| context(e, "cannot set the mode of directory", path))?,
            // Another writer may have created it in the meantime.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(context(e, "cannot create directory", path)),
        }
    }
    Ok(())
}

/// Temp files a killed run left in `dir` next to any of the files `names` (their names in
/// `dir`), as (the file they were to replace, the temp file): one read of the directory,
/// however many names. Only names this module creates are found
/// (`.{name}.tokend-XXXXXXXX.tmp`), and only regular files; a missing directory has none.
pub fn stale_temps(dir: &Path, names: &HashSet<&str>) -> io::Result<Vec<(PathBuf, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(context(e, "cannot list directory", dir)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| context(e, "cannot list directory", dir))?;
        let file_name = entry.file_name();
        let Some(target) = file_name.to_str().and_then(temp_target) else {
            continue;
        };
        if names.contains(target) && entry.file_type().is_ok_and(|t| t.is_file()) {
            found.push((dir.join(target), entry.path()));
        }
    }
    Ok(found)
}

/// The name of the file a temp file named `file_name` was to replace, if it is one of ours.
fn temp_target(file_name: &str) -> Option<&str> {
    let (target, random) = file_name
        .strip_prefix('.')?
        .strip_suffix(TEMP_SUFFIX)?
        .rsplit_once(TEMP_INFIX)?;
    let ours = random.len() == TEMP_RANDOM_LEN && random.bytes().all(|b| b.is_ascii_alphanumeric());
    (ours && !target.is_empty()).then_some(target)
}

/// The directory and name of the file `path`.
pub fn split(path: &Path) -> io::Result<(&Path, &str)> {
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` does not name a file", path.display()),
        )
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(invalid)?;
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(invalid)?;
    Ok((dir, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn target(path: &Path, mode: u32) -> Target<'_> {
        Target {
            path,
            mode,
            owner: None,
            group: None,
        }
    }

    #[test]
    fn writes_contents_with_the_exact_mode_and_creates_parents_0750() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/token");
        write(&target(&path, 0o640), b"hello").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(fs::metadata(dir.path().join("a")).unwrap().mode() & 0o7777, 0o750);
        assert_eq!(fs::metadata(dir.path().join("a/b")).unwrap().mode() & 0o7777, 0o750);
        // The mode is re-applied on every write, even if someone changed it in between.
        fs::set_permissions(&path, Permissions::from_mode(0o666)).unwrap();
        write(&target(&path, 0o600), b"again").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        // Nothing but the target is left in the directory.
        let names: Vec<_> = fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["token"]);
    }

    #[test]
    fn sets_owner_and_group_on_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("owned");
        let me = nix::unistd::getuid().as_raw();
        let my_group = nix::unistd::getgid().as_raw();
        write(
            &Target {
                path: &path,
                mode: 0o600,
                owner: Some(me),
                group: Some(my_group),
            },
            b"x",
        )
        .unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (me, my_group));
        if me == 0 {
            write(
                &Target {
                    path: &path,
                    mode: 0o640,
                    owner: Some(65534),
                    group: Some(65534),
                },
                b"y",
            )
            .unwrap();
            let meta = fs::metadata(&path).unwrap();
            assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (65534, 65534, 0o640));
        }
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write(&target(&path, 0o600), b"old").unwrap();
        // Renaming a file over a non-empty directory fails after the temp file was written.
        let blocker = dir.path().join("dir");
        fs::create_dir(&blocker).unwrap();
        fs::write(blocker.join("f"), b"").unwrap();
        assert!(write(&target(&blocker, 0o600), b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, vec!["dir", "token"]);
    }

    #[test]
    fn a_file_holds_its_contents_only_as_written_by_tokend() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.token");
        let target = Target {
            path: &path,
            mode: 0o640,
            owner: None,
            group: None,
        };
        assert!(!holds(&target, b"token-1"), "no file yet");
        write(&target, b"token-1").unwrap();
        assert!(holds(&target, b"token-1"));
        assert!(!holds(&target, b"token-2") && !holds(&target, b"token-1 "));
        // A mode changed by hand, a second link, a symlink: each is written anew.
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        assert!(!holds(&target, b"token-1"));
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        fs::hard_link(&path, dir.path().join("link")).unwrap();
        assert!(!holds(&target, b"token-1"));
        fs::remove_file(dir.path().join("link")).unwrap();
        assert!(holds(&target, b"token-1"));
        let elsewhere = dir.path().join("elsewhere");
        write(
            &Target {
                path: &elsewhere,
                ..target
            },
            b"token-1",
        )
        .unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(!holds(&target, b"token-1"));
        // Another owner (when tokend runs as root, it can make one).
        if nix::unistd::geteuid().is_root() {
            fs::remove_file(&path).unwrap();
            write(&target, b"token-1").unwrap();
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            assert!(!holds(&target, b"token-1"));
            assert!(holds(
                &Target {
                    owner: Some(65534),
                    ..target
                },
                b"token-1"
            ));
        }
    }

    #[test]
    fn stale_temp_files_are_found_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("billing.token");
        let stale = dir.path().join(".billing.token.tokend-Ab3dE6gH.tmp");
        let keep = [
            ".billing.token.tokend-short.tmp",
            ".other.token.tokend-Ab3dE6gH.tmp",
            "billing.token.tokend-Ab3dE6gH.tmp",
            ".billing.token.tokend-Ab3dE6gH.tmp.bak",
        ];
        fs::write(&stale, b"partial").unwrap();
        for k in keep {
            fs::write(dir.path().join(k), b"").unwrap();
        }
        let names = HashSet::from(["billing.token", "other"]);
        assert_eq!(stale_temps(dir.path(), &names).unwrap(), vec![(path, stale.clone())]);
        // Only for the names asked about.
        assert!(stale_temps(dir.path(), &HashSet::from(["other.token"])).unwrap().len() == 1);
        assert!(stale_temps(dir.path(), &HashSet::from(["third"])).unwrap().is_empty());
        for k in keep {
            assert!(dir.path().join(k).exists(), "{k}");
        }
        assert!(stale_temps(&dir.path().join("missing"), &names).unwrap().is_empty());
    }

    /// Readers looping on open/read while the file is replaced thousands of times only ever see
    /// a complete version. Every version has a different length and a self-checking body.
    #[test]
    fn concurrent_readers_never_see_a_partial_or_empty_file() {
        const ROTATIONS: usize = 3000;
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("token"));
        let body = |n: usize| format!("begin-{n}-{}-end-{n}", "x".repeat(n % 977));
        write(&target(&path, 0o600), body(0).as_bytes()).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (path, done) = (path.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut reads = 0usize;
                    while !done.load(Ordering::Relaxed) {
                        let text = String::from_utf8(fs::read(&*path).unwrap()).unwrap();
                        let n: usize = text
                            .strip_prefix("begin-")
                            .unwrap()
                            .split('-')
                            .next()
                            .unwrap()
                            .parse()
                            .unwrap();
                        assert_eq!(text, body(n), "torn read");
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        for n in 1..=ROTATIONS {
            write(&target(&path, 0o600), body(n).as_bytes()).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let reads: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(reads > 0);
        assert_eq!(fs::read(&*path).unwrap(), body(ROTATIONS).as_bytes());
    }
}
