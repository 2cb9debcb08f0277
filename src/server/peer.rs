//! Who is on the other end of a Unix socket, as the kernel tells it: uid, gid and pid from
//! `SO_PEERCRED`, and the supplementary groups from `SO_PEERGROUPS`. Both describe the peer at
//! the moment it connected, and nothing the peer sends can change them.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

/// The credentials of a connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// Supplementary groups (may or may not include `gid`).
    pub groups: Vec<u32>,
}

impl Peer {
    /// Reads the credentials of the process connected to `socket`.
    pub fn of(socket: &impl AsFd) -> io::Result<Peer> {
        let cred = getsockopt(socket, PeerCredentials).map_err(io::Error::from)?;
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
            groups: peer_groups(socket)?,
        })
    }

    /// Whether the peer belongs to `gid`, as its primary or a supplementary group.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// `SO_PEERGROUPS` (Linux 4.13); its value on every architecture tokend builds for. neither
/// `libc` nor `nix` export it for glibc targets.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "powerpc64",
    target_arch = "s390x",
    target_arch = "loongarch64"
))]
const SO_PEERGROUPS: libc::c_int = 59;

/// Linux's NGROUPS_MAX: no process has more supplementary groups than this.
const MAX_GROUPS: usize = 65536;

/// The peer's supplementary groups.
#[allow(unsafe_code)]
fn peer_groups(socket: &impl AsFd) -> io::Result<Vec<u32>> {
    let fd = socket.as_fd().as_raw_fd();
    // Start with room for 64 groups; the kernel reports the size it needs if that is too small.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `fd` is a valid open socket borrowed for the duration of the call. `groups`
        // is an initialized buffer of exactly `len` bytes, and `len` is a valid, initialized
        // `socklen_t` the kernel may update. On success the kernel has written `len` bytes (a
        // whole number of gid_t) into the buffer; on ERANGE it wrote nothing but the size it
        // needs into `len`. Nothing is read from the buffer beyond what the kernel wrote.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOPROTOOPT) {
            // Linux before 4.13: only the primary group is known; say so once.
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!("this kernel cannot report a caller's supplementary groups (SO_PEERGROUPS, Linux 4.13); `readers.groups` match primary groups only")
            });
            return Ok(Vec::new());
        }
        let needed = len as usize / std::mem::size_of::<libc::gid_t>();
        if err.raw_os_error() == Some(libc::ERANGE) && needed > groups.len() && needed <= MAX_GROUPS {
            groups.resize(needed, 0);
            continue;
        }
        return Err(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn reads_our_own_credentials_from_a_socket_pair() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = Peer::of(&a).unwrap();
        assert_eq!(peer.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(peer.gid, nix::unistd::getegid().as_raw());
        assert_eq!(peer.pid, std::process::id() as i32);
        let mut ours: Vec<u32> = nix::unistd::getgroups().unwrap().iter().map(|g| g.as_raw()).collect();
        let mut theirs = peer.groups.clone();
        ours.sort();
        theirs.sort();
        assert_eq!(theirs, ours);
    }
}
