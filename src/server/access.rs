//! Who may read what over the socket. Root and tokend's own user may read everything; a client's
//! `readers` may read that client; `socket.metrics_readers` may read `/metrics`. Everyone else is
//! refused. The decision uses only the kernel's view of the caller (`Peer`).

use crate::config::{Access, Readers};

use super::admission::Class;
use super::peer::Peer;

pub struct Authority {
    access: Access,
    /// tokend's effective uid.
    own_uid: u32,
}

impl Authority {
    pub fn new(access: Access) -> Authority {
        Authority {
            access,
            own_uid: nix::unistd::geteuid().as_raw(),
        }
    }

    /// Root and tokend's own user.
    pub fn is_privileged(&self, peer: &Peer) -> bool {
        peer.uid == 0 || peer.uid == self.own_uid
    }

    pub fn may_read(&self, peer: &Peer, client: &str) -> bool {
        self.is_privileged(peer) || self.access.readers.get(client).is_some_and(|r| matches(r, peer))
    }

    pub fn may_read_metrics(&self, peer: &Peer) -> bool {
        self.is_privileged(peer) || matches(&self.access.metrics_readers, peer)
    }

    /// How far the caller is trusted with connections (see `admission`).
    pub fn class(&self, peer: &Peer) -> Class {
        if self.is_privileged(peer) {
            Class::Privileged
        } else if self
            .access
            .readers
            .values()
            .chain([&self.access.metrics_readers])
            .any(|r| matches(r, peer))
        {
            Class::Reader
        } else {
            Class::Stranger
        }
    }
}

fn matches(readers: &Readers, peer: &Peer) -> bool {
    readers.users.iter().any(|u| u.id == peer.uid) || readers.groups.iter().any(|g| peer.in_group(g.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientName, Owner, Principal};

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            pid: 1,
            groups: groups.to_vec(),
        }
    }

    fn owner(id: u32) -> Owner {
        Owner {
            spec: Principal::Id(id),
            id,
        }
    }

    #[test]
    fn readers_users_and_groups_decide_and_everyone_else_is_refused() {
        let mut access = Access::default();
        access.readers.insert(
            ClientName::new("billing").unwrap(),
            Readers {
                users: vec![owner(1001)],
                groups: vec![owner(2000)],
            },
        );
        access.metrics_readers = Readers {
            users: vec![owner(3000)],
            groups: vec![],
        };
        let a = Authority { access, own_uid: 999 };
        // (peer, may read billing, may read other, may read metrics)
        let cases = [
            (peer(0, 0, &[]), true, true, true),                // root
            (peer(999, 999, &[]), true, true, true),            // tokend itself
            (peer(1001, 1001, &[]), true, false, false),        // a listed user
            (peer(1002, 2000, &[]), true, false, false),        // primary group listed
            (peer(1003, 1003, &[5, 2000]), true, false, false), // supplementary group listed
            (peer(1004, 1004, &[5, 6]), false, false, false),   // nobody we know
            (peer(3000, 3000, &[]), false, false, true),        // metrics only
        ];
        for (p, billing, other, metrics) in cases {
            assert_eq!(a.may_read(&p, "billing"), billing, "{p:?} billing");
            assert_eq!(a.may_read(&p, "other"), other, "{p:?} other");
            assert_eq!(a.may_read_metrics(&p), metrics, "{p:?} metrics");
        }
        assert_eq!(a.class(&peer(0, 0, &[])), Class::Privileged);
        assert_eq!(a.class(&peer(1003, 1003, &[2000])), Class::Reader);
        assert_eq!(a.class(&peer(3000, 3000, &[])), Class::Reader);
        assert_eq!(a.class(&peer(1004, 1004, &[5])), Class::Stranger);
    }
}
