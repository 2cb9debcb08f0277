//! `tokend prepare-dirs`: give directories tokend's owner and a mode, for a Kubernetes init
//! container. A hostPath volume is created owned by root, and the image has no shell or chown;
//! this runs as root with only CAP_CHOWN, on the paths the manifest names, and nothing else.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use tracing::info;

/// Prepares each `PATH:MODE` in `dirs` for `owner` (`UID:GID`).
pub fn dirs(owner: &str, dirs: &[String]) -> Result<(), String> {
    let (uid, gid) = owner
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)))
        .ok_or_else(|| format!("--owner {owner}: write it as numeric UID:GID, such as 65532:65532"))?;
    for spec in dirs {
        let (path, mode) = spec
            .rsplit_once(':')
            .and_then(|(p, m)| Some((Path::new(p), u32::from_str_radix(m, 8).ok().filter(|m| *m <= 0o777)?)))
            .ok_or_else(|| format!("{spec}: write it as PATH:MODE, such as /run/tokend:0755"))?;
        if !path.is_absolute() {
            return Err(format!("{spec}: the path must be absolute"));
        }
        match std::fs::DirBuilder::new().recursive(true).mode(mode).create(path) {
            Ok(()) => {}
            Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
        }
        // Never through a symlink: the node's directory itself, or nothing.
        let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", path.display()));
        }
        let chown = |uid: u32, gid: Option<u32>| {
            std::os::unix::fs::lchown(path, Some(uid), gid).map_err(|e| {
                format!(
                    "cannot give {} to {uid}:{}: {e} (the container needs CAP_CHOWN)",
                    path.display(),
                    gid.map_or("-".to_owned(), |g| g.to_string())
                )
            })
        };
        // Only the owner may change a mode without CAP_FOWNER: a directory already given to
        // tokend (a pod restart runs this again) is taken back for the change, if one is needed.
        if meta.mode() & 0o7777 != mode {
            let me = nix::unistd::Uid::effective().as_raw();
            if meta.uid() != me {
                chown(me, None)?;
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
        }
        let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if (meta.uid(), meta.gid()) != (uid, gid) {
            chown(uid, Some(gid))?;
        }
        info!(path = %path.display(), owner = %format!("{uid}:{gid}"), mode = %format!("{mode:04o}"), "prepared");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::{Gid, Uid};

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
    }
}
