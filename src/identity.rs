//! Who tokend acts as — a uid and its groups — and what a configuration asks of it that it
//! cannot do: give a file or the socket a group it is not in, or another owner without root.
//! `run` checks itself before applying a configuration; `check` checks the service's user (not
//! the administrator running `sudo tokend check`).

use std::fmt;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

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
}
