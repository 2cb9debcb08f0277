//! What parsing needs from the machine: user and group names, and the environment. Passed in, so
//! that parsing is pure and tests can name users that do not exist here.

use std::ffi::OsString;

pub trait Host {
    /// The uid of the user `name`, or `None` if there is no such user.
    fn user_id(&self, name: &str) -> Result<Option<u32>, String>;
    /// The gid of the group `name`, or `None` if there is no such group.
    fn group_id(&self, name: &str) -> Result<Option<u32>, String>;
    /// An environment variable of the process.
    fn var(&self, name: &str) -> Option<OsString>;
}

/// This machine: the passwd and group databases (NSS) and the process environment.
pub struct System;

impl Host for System {
    fn user_id(&self, name: &str) -> Result<Option<u32>, String> {
        without_database("/etc/passwd", "user")?;
        nix::unistd::User::from_name(name)
            .map(|u| u.map(|u| u.uid.as_raw()))
            .map_err(|e| e.to_string())
    }

    fn group_id(&self, name: &str) -> Result<Option<u32>, String> {
        without_database("/etc/group", "group")?;
        nix::unistd::Group::from_name(name)
            .map(|g| g.map(|g| g.gid.as_raw()))
            .map_err(|e| e.to_string())
    }

    fn var(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }
}

/// A machine with no user or group database, such as tokend's container image, cannot look up
/// a name at all: say so, rather than "there is no user".
fn without_database(file: &str, what: &str) -> Result<(), String> {
    if std::path::Path::new(file).exists() {
        Ok(())
    } else {
        Err(format!(
            "{what} names cannot be looked up here ({file} does not exist, as in tokend's container image); write the numeric id"
        ))
    }
}
