//! `tokend prepare-dirs`: give directories tokend's owner and a mode, for a Kubernetes init
//! container. A hostPath volume is created owned by root, and the image has no shell or chown;
//! this runs as root with only CAP_CHOWN, on the paths the manifest names, and nothing else.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{Mode, fstat, mkdirat};
use nix::unistd::{Gid, Uid, fchownat};

use tracing::info;

/// Prepares each `PATH:MODE` in `dirs` for `owner` (`UID:GID`).
pub fn dirs(owner: &str, dirs: &[String]) -> Result<(), String> {
    let (uid, gid) = owner
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)))
        .ok_or_else(|| format!("--owner {owner}: write it as numeric UID:GID, such as 64023:64023"))?;
    for spec in dirs {
        let (path, mode) = spec
            .rsplit_once(':')
            .and_then(|(p, m)| Some((Path::new(p), u32::from_str_radix(m, 8).ok().filter(|m| *m <= 0o777)?)))
            .ok_or_else(|| format!("{spec}: write it as PATH:MODE, such as /run/tokend:0755"))?;
        if !path.is_absolute() {
            return Err(format!("{spec}: the path must be absolute"));
        }
        let dir = open_creating(path, mode)?;
        let meta = fstat(&dir).map_err(|e| format!("{}: {e}", path.display()))?;
        let chown = |uid: u32, gid: Option<u32>| {
            fchownat(
                &dir,
                "",
                Some(Uid::from_raw(uid)),
                gid.map(Gid::from_raw),
                AtFlags::AT_EMPTY_PATH,
            )
            .map_err(|e| {
                format!(
                    "cannot give {} to {uid}:{}: {e} (the container needs CAP_CHOWN)",
                    path.display(),
                    gid.map_or("-".to_owned(), |g| g.to_string())
                )
            })
        };
        // Only the owner may change a mode without CAP_FOWNER: a directory already given to
        // tokend (a pod restart runs this again) is taken back for the change, if one is needed.
        if meta.st_mode & 0o7777 != mode {
            let me = Uid::effective().as_raw();
            if meta.st_uid != me {
                chown(me, None)?;
            }
            // fchmod refuses an O_PATH descriptor; its /proc link names the same directory.
            let by_fd = format!("/proc/self/fd/{}", dir.as_raw_fd());
            std::fs::set_permissions(&by_fd, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
        }
        let meta = fstat(&dir).map_err(|e| format!("{}: {e}", path.display()))?;
        if (meta.st_uid, meta.st_gid) != (uid, gid) {
            chown(uid, Some(gid))?;
        }
        info!(path = %path.display(), owner = %format!("{uid}:{gid}"), mode = %format!("{mode:04o}"), "prepared");
    }
    Ok(())
}

/// Opens the directory `path` one component at a time from `/`, never through a symlink at any
/// level, creating what is missing: parents as a package would (0755, root's), the directory
/// itself with `mode`. Each step is `openat` on the directory opened before it, so what is
/// changed afterwards is the directory that was reached, whatever the path names a moment later.
/// O_PATH needs no permission on the directory itself (root here has no CAP_DAC_OVERRIDE, and
/// the directory may already be tokend's, 0700).
fn open_creating(path: &Path, mode: u32) -> Result<OwnedFd, String> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("{}: the path must not contain `..`", path.display()));
            }
        }
    }
    let mut dir = open("/", flags, Mode::empty()).map_err(|e| format!("cannot open /: {e}"))?;
    let mut reached = PathBuf::from("/");
    for (i, name) in names.iter().enumerate() {
        reached.push(name);
        let opened = match openat(&dir, *name, flags, Mode::empty()) {
            Err(Errno::ENOENT) => {
                let new_mode = if i + 1 == names.len() { mode } else { 0o755 };
                match mkdirat(&dir, *name, Mode::from_bits_truncate(new_mode)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(format!("cannot create {}: {e}", reached.display())),
                }
                openat(&dir, *name, flags, Mode::empty())
            }
            other => other,
        };
        dir = opened.map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => format!(
                "{} is not a directory (a symlink is not followed, at any level of the path)",
                reached.display()
            ),
            e => format!("cannot open {}: {e}", reached.display()),
        })?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn directories_get_their_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run/tokend");
        let me = format!("{}:{}", Uid::effective(), Gid::effective());
        dirs(&me, &[format!("{}:0750", run.display())]).unwrap();
        let meta = std::fs::metadata(&run).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o750);
        assert_eq!(
            (meta.uid(), meta.gid()),
            (Uid::effective().as_raw(), Gid::effective().as_raw())
        );
        for (owner, spec, expected) in [
            ("tokend", "/x:0755", "numeric UID:GID"),
            ("1:1", "/x", "PATH:MODE"),
            ("1:1", "/x:0999", "PATH:MODE"),
            ("1:1", "relative:0755", "absolute"),
        ] {
            let err = dirs(owner, &[spec.to_owned()]).unwrap_err();
            assert!(err.contains(expected), "{owner} {spec}: {err}");
        }
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(dirs(&me, &[format!("{}:0755", file.display())]).is_err());
        // A symlink in its place is refused, not followed.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&run, &link).unwrap();
        let err = dirs(&me, &[format!("{}:0700", link.display())]).unwrap_err();
        assert!(err.contains("a symlink is not followed"), "{err}");
        assert_eq!(std::fs::metadata(&run).unwrap().mode() & 0o777, 0o750);
        // Nor anywhere above it: the directory at the end of a path through a symlink is left
        // as it was, and none is created there.
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::create_dir(target.join("kept")).unwrap();
        std::fs::set_permissions(target.join("kept"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("m")).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("m/sub")).unwrap();
        for name in ["kept", "tokend", "new/tokend"] {
            let through = dir.path().join("m/sub").join(name);
            let err = dirs(&me, &[format!("{}:0700", through.display())]).unwrap_err();
            assert!(
                err.contains(&format!("{}/m/sub is not a directory", dir.path().display()))
                    && err.contains("a symlink is not followed"),
                "{name}: {err}"
            );
        }
        assert_eq!(std::fs::metadata(target.join("kept")).unwrap().mode() & 0o777, 0o755);
        assert!(!target.join("tokend").exists() && !target.join("new").exists());
        let climbing = format!("{}/m/../x:0700", dir.path().display());
        assert!(dirs(&me, &[climbing]).unwrap_err().contains("`..`"));
        // Missing parents get 0755, not the directory's mode.
        let deep = dir.path().join("a/b/state");
        dirs(&me, &[format!("{}:0700", deep.display())]).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("a/b")).unwrap().mode() & 0o777, 0o755);
        assert_eq!(std::fs::metadata(&deep).unwrap().mode() & 0o777, 0o700);
    }
}
