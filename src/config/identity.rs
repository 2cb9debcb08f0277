//! Who tokend acts as — a uid and its groups — and what a configuration asks of it that it
//! cannot do: give a file or the socket a group it is not in, or another owner without root.
//! `run` checks itself before applying a configuration; `check` checks the service's user (not
//! the administrator running `sudo tokend check`). And whether anyone else could change a file
//! whose contents tokend runs or renders.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use crate::config::{Config, Owner};

pub const READ: u32 = 0o4;
pub const WRITE: u32 = 0o2;
pub const SEARCH: u32 = 0o1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's name, when it has one.
    pub name: Option<String>,
    pub uid: u32,
    pub gid: u32,
    /// Every group it is in, its primary group included.
    pub groups: Vec<u32>,
}

impl Identity {
    /// This process (effective ids and supplementary groups).
    pub fn current() -> Identity {
        let (uid, gid) = (Uid::effective(), Gid::effective());
        let mut groups: Vec<u32> = nix::unistd::getgroups()
            .unwrap_or_default()
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        groups.push(gid.as_raw());
        groups.sort_unstable();
        groups.dedup();
        Identity {
            name: User::from_uid(uid).ok().flatten().map(|u| u.name),
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            groups,
        }
    }

    /// The user `name` as a login (or systemd's `User=`) would make it: its primary group and
    /// every group that lists it.
    pub fn of_user(name: &str) -> Result<Identity, String> {
        let user = User::from_name(name)
            .map_err(|e| format!("cannot look up user `{name}`: {e}"))?
            .ok_or_else(|| format!("there is no user `{name}` on this system"))?;
        let cname = std::ffi::CString::new(name).map_err(|_| format!("`{name}` is not a user name"))?;
        let mut groups: Vec<u32> = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|e| format!("cannot list the groups of `{name}`: {e}"))?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        Ok(Identity {
            name: Some(user.name),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        })
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Whether it may create and replace files in the directory `dir` (by its mode bits; ACLs
    /// and sandboxing are not seen).
    pub fn may_write_dir(&self, dir: &Metadata) -> bool {
        self.permits(dir.mode(), dir.uid(), dir.gid(), WRITE | SEARCH)
    }

    /// Whether it may read the file `file` (by its mode bits).
    pub fn may_read(&self, file: &Metadata) -> bool {
        self.permits(file.mode(), file.uid(), file.gid(), READ)
    }

    /// Whether a file with this mode, owner and group grants it every bit of `want` (`READ`,
    /// `WRITE`, `SEARCH`): the owner's bits, else the group's, else the others', as the kernel
    /// picks them. Root is granted everything.
    pub fn permits(&self, mode: u32, owner: u32, group: u32, want: u32) -> bool {
        let bits = if self.is_root() {
            return true;
        } else if owner == self.uid {
            mode >> 6
        } else if self.in_group(group) {
            mode >> 3
        } else {
            mode
        };
        bits & want == want
    }

    /// Why it cannot give a file `owner` and `group` (each `None` if it can).
    pub fn cannot_own(&self, owner: Option<&Owner>, group: Option<&Owner>) -> (Option<String>, Option<String>) {
        let owner = owner
            .filter(|o| !self.is_root() && o.id != self.uid)
            .map(|o| format!("setting the owner to {} needs root ({self})", o.spec));
        let group = group.filter(|g| !self.is_root() && !self.in_group(g.id)).map(|g| {
            format!(
                "{self} is not a member of group {}, so it cannot give the file that group",
                g.spec
            )
        });
        (owner, group)
    }

    /// What `config` asks of it that it cannot do and that stops tokend from serving at all:
    /// the socket's group. (An output it cannot own fails alone and is retried, like any
    /// failing output; `check` reports those too.)
    pub fn cannot_serve(&self, config: &Config) -> Option<String> {
        let socket = config.socket.as_ref()?;
        let group = socket
            .group
            .as_ref()
            .filter(|g| !self.is_root() && !self.in_group(g.id))?;
        Some(format!(
            "{self} is not a member of group {}, so it cannot give the socket {} that group; \
             add tokend's user to the group (with systemd: SupplementaryGroups={} in the unit), or remove `group`",
            group.spec,
            socket.path.display(),
            group.spec
        ))
    }
}

/// `tokend (user tokend, uid 998)`, or `tokend (uid 998)` for a user without a name: the
/// identity tokend runs as, in the words of `check`'s messages.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "tokend (user {name}, uid {})", self.uid),
            None => write!(f, "tokend (uid {})", self.uid),
        }
    }
}

/// Symlinks followed at most in one path, as the kernel's own limit (`ELOOP`).
const MAX_SYMLINKS: usize = 40;

/// Why someone other than root and `uid` could change what the file at `path` holds (a hook's
/// command, a template): its owner, its mode, or a directory on the way to it (symlinks
/// followed, each judged by the directory that holds it) that another user owns or may write.
/// A directory others may write is safe only with the sticky bit (as `/tmp`), and then only for
/// an entry root or `uid` owns. `None` when only they can, and when the path does not resolve:
/// nothing of anyone's runs from it yet, and saying that it is missing is the caller's job.
/// Checked by path, for files tokend runs or reads later: not a guard against a race.
pub fn others_may_change(path: &Path, uid: u32) -> Option<String> {
    match walk(path, uid) {
        Err(Walk::Loose(why)) => Some(why),
        Ok(()) | Err(Walk::Unresolved) => None,
    }
}

enum Walk {
    Unresolved,
    Loose(String),
}

impl From<std::io::Error> for Walk {
    fn from(_: std::io::Error) -> Walk {
        Walk::Unresolved
    }
}

fn walk(path: &Path, uid: u32) -> Result<(), Walk> {
    let trusted = |owner: u32| owner == 0 || owner == uid;
    let shown = path.display();
    let who = |owner: u32| match User::from_uid(Uid::from_raw(owner)).ok().flatten() {
        Some(u) => format!("uid {owner} ({})", u.name),
        None => format!("uid {owner}"),
    };
    // A directory on the way: `Ok(true)` if others may add to it but replace only their own
    // entries (the sticky bit).
    let directory = |dir: &Path, meta: &Metadata| -> Result<bool, Walk> {
        let loose = |how: String| Err(Walk::Loose(format!("{shown} is in {}, {how}", dir.display())));
        if !trusted(meta.uid()) {
            loose(format!(
                "which belongs to {}; move it to a directory of root's",
                who(meta.uid())
            ))
        } else if meta.mode() & 0o022 == 0 {
            Ok(false)
        } else if meta.mode() & 0o1000 != 0 {
            Ok(true)
        } else {
            loose(format!(
                "which {} may write (mode {:04o}); `chmod go-w {}`, or move it",
                writers(meta.mode()),
                meta.mode() & 0o7777,
                dir.display()
            ))
        }
    };
    let mut pending: VecDeque<OsString> = names(path);
    let mut at = PathBuf::from("/");
    let mut sticky = directory(&at, &std::fs::symlink_metadata(&at)?)?;
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            at.pop();
            sticky = directory(&at, &std::fs::symlink_metadata(&at)?)?;
            continue;
        }
        let next = at.join(&name);
        let meta = std::fs::symlink_metadata(&next)?;
        if sticky && !trusted(meta.uid()) {
            return Err(Walk::Loose(format!(
                "{shown} is reached through {}, which belongs to {} in a directory every user may add to",
                next.display(),
                who(meta.uid())
            )));
        }
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Walk::Unresolved);
            }
            let target = std::fs::read_link(&next)?;
            if target.is_absolute() {
                at = PathBuf::from("/");
                sticky = directory(&at, &std::fs::symlink_metadata(&at)?)?;
            }
            for n in names(&target).into_iter().rev() {
                pending.push_front(n);
            }
        } else if pending.is_empty() {
            if !trusted(meta.uid()) {
                return Err(Walk::Loose(format!(
                    "{shown} belongs to {}, not to root or tokend's user (uid {uid}); `chown root {shown}`",
                    who(meta.uid())
                )));
            }
            if meta.mode() & 0o022 != 0 {
                return Err(Walk::Loose(format!(
                    "{shown} is writable by {} (mode {:04o}); `chmod go-w {shown}`",
                    writers(meta.mode()),
                    meta.mode() & 0o7777
                )));
            }
        } else {
            sticky = directory(&next, &meta)?;
            at = next;
        }
    }
    Ok(())
}

/// Who besides the owner may write, by the mode's write bits.
fn writers(mode: u32) -> &'static str {
    if mode & 0o002 != 0 { "every user" } else { "its group" }
}

/// A path's names, in order (`..` kept, `/` and `.` dropped).
fn names(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// A group's name, for messages (its number when it has none).
pub fn group_name(gid: u32) -> String {
    Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Principal;

    fn nobody() -> Identity {
        Identity {
            name: Some("nobody".into()),
            uid: 65534,
            gid: 65534,
            groups: vec![65534, 4242],
        }
    }

    #[test]
    fn owners_and_groups_it_may_set() {
        let owner = |id| Owner {
            spec: Principal::Id(id),
            id,
        };
        let n = nobody();
        assert_eq!(n.cannot_own(Some(&owner(65534)), Some(&owner(4242))), (None, None));
        let (o, g) = n.cannot_own(Some(&owner(0)), Some(&owner(7)));
        assert_eq!(
            o.unwrap(),
            "setting the owner to 0 needs root (tokend (user nobody, uid 65534))"
        );
        assert!(g.unwrap().contains("is not a member of group 7"));
        let root = Identity {
            name: Some("root".into()),
            uid: 0,
            gid: 0,
            groups: vec![0],
        };
        assert_eq!(root.cannot_own(Some(&owner(1)), Some(&owner(7))), (None, None));
    }

    #[test]
    fn the_current_process_and_a_named_user() {
        let me = Identity::current();
        assert!(me.in_group(me.gid));
        let root = Identity::of_user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(
            Identity::of_user("no-such-user-tokend")
                .unwrap_err()
                .contains("there is no user")
        );
    }

    #[test]
    fn directory_write_permission_follows_the_mode_bits() {
        let n = nobody();
        // (mode, owner, group, may write)
        let cases = [
            (0o700, 65534, 0, true),
            (0o500, 65534, 0, false),
            (0o770, 0, 4242, true),
            (0o750, 0, 4242, false),
            (0o775, 0, 0, false),
            (0o777, 0, 0, true),
            (0o1777, 0, 0, true),
        ];
        for (mode, owner, group, expected) in cases {
            assert_eq!(
                n.permits(mode, owner, group, WRITE | SEARCH),
                expected,
                "{mode:o} {owner}:{group}"
            );
        }
        // Owner bits are the owner's even when the group's would allow more.
        assert!(!n.permits(0o070, 65534, 4242, READ));
        assert!(n.permits(0o640, 0, 4242, READ) && !n.permits(0o600, 0, 4242, READ));
        let root = Identity::of_user("root").unwrap();
        assert!(root.permits(0o500, 1, 1, WRITE));
    }

    /// Code tokend runs is judged as ssh judges a key: by its own mode and every directory on
    /// the way to it, symlinks included; a sticky directory only for what root or tokend owns.
    #[test]
    fn a_file_others_could_change_is_named_with_the_reason() {
        use std::os::unix::fs::PermissionsExt;
        let me = Uid::effective().as_raw();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        std::fs::create_dir(root.join("safe")).unwrap();
        mode(&root.join("safe"), 0o755);
        let script = root.join("safe/hook.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        mode(&script, 0o755);
        assert_eq!(others_may_change(&script, me), None);
        // Missing: nothing to judge.
        assert_eq!(others_may_change(&root.join("safe/none"), me), None);
        mode(&script, 0o777);
        let why = others_may_change(&script, me).unwrap();
        assert!(
            why.contains("is writable by every user (mode 0777)") && why.contains("chmod go-w"),
            "{why}"
        );
        mode(&script, 0o775);
        assert!(
            others_may_change(&script, me)
                .unwrap()
                .contains("writable by its group (mode 0775)")
        );
        mode(&script, 0o755);
        mode(&root.join("safe"), 0o777);
        let why = others_may_change(&script, me).unwrap();
        assert!(
            why.contains(&format!(
                "is in {}/safe, which every user may write (mode 0777)",
                root.display()
            )),
            "{why}"
        );
        // The sticky bit (as /tmp has) keeps others from replacing what they do not own.
        mode(&root.join("safe"), 0o1777);
        assert_eq!(others_may_change(&script, me), None);
        // A symlink is judged where it lives, and its target where that lives.
        std::fs::create_dir(root.join("open")).unwrap();
        mode(&root.join("open"), 0o777);
        std::os::unix::fs::symlink(&script, root.join("open/link")).unwrap();
        let why = others_may_change(&root.join("open/link"), me).unwrap();
        assert!(why.contains("/open, which every user may write"), "{why}");
        std::fs::create_dir(root.join("links")).unwrap();
        mode(&root.join("links"), 0o755);
        std::os::unix::fs::symlink("../open/hook.sh", root.join("links/relative")).unwrap();
        std::fs::write(root.join("open/hook.sh"), "").unwrap();
        let why = others_may_change(&root.join("links/relative"), me).unwrap();
        assert!(why.contains("/open, which every user may write"), "{why}");
        std::os::unix::fs::symlink("../safe/hook.sh", root.join("links/good")).unwrap();
        assert_eq!(others_may_change(&root.join("links/good"), me), None);
    }
}
