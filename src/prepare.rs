//! `tokend prepare-dirs`: give directories tokend's owner and a mode, for a Kubernetes init
//! container. A hostPath volume is created owned by root, and the image has no shell or chown;
//! this runs as root with only CAP_CHOWN, on the paths the manifest names, and nothing else.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, fstat};
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
        // Missing parents as a package would make them (0755, root's), the directory itself
        // with its mode.
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        match std::fs::DirBuilder::new().mode(mode).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
        }
        // Opened once, never through a symlink, and changed through that descriptor: what is
        // changed is what was checked, not whatever the path names a moment later. O_PATH needs
        // no permission on the directory itself (root here has no CAP_DAC_OVERRIDE, and the
        // directory may already be tokend's, 0700).
        let dir = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => {
                format!("{} is not a directory (a symlink is not followed)", path.display())
            }
            e => format!("cannot open {}: {e}", path.display()),
        })?;
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
        // Missing parents get 0755, not the directory's mode.
        let deep = dir.path().join("a/b/state");
        dirs(&me, &[format!("{}:0700", deep.display())]).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("a/b")).unwrap().mode() & 0o777, 0o755);
        assert_eq!(std::fs::metadata(&deep).unwrap().mode() & 0o777, 0o700);
    }
}
