//! Before refresh tasks start: the files of a grant that changed go, and so do the temp files
//! killed runs left; output directories others may write are named in a warning.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{error, info, warn};

use crate::config::ClientName;
use crate::output::{atomic, lock};
use crate::refresh::Group;
use crate::refresh::state;

/// Deletes files that hold a token no longer to be served, each with the file held.
pub(super) fn withdraw_files(label: &str, paths: &[PathBuf]) {
    for path in paths {
        let _held = lock::hold(path);
        match std::fs::remove_file(path) {
            Ok(()) => {
                info!(client = %label, path = %path.display(), "removed a file holding the previous grant's token")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                error!(client = %label, path = %path.display(), error = %e, "cannot remove a file holding the previous grant's token")
            }
        }
    }
}

/// Before a batch of groups starts: each group's files of the previous grant it replaces go
/// (`withdraw_files`), then the temp files killed runs left next to any of their files, then a
/// warning for each output directory others may write.
pub(super) fn before_start(batch: &[(Arc<Group>, Vec<PathBuf>)], state_dir: &Path) {
    for (group, withdraw) in batch {
        withdraw_files(&group.label(), withdraw);
    }
    let groups: Vec<&Group> = batch.iter().map(|(g, _)| &**g).collect();
    remove_stale_temps(&groups, state_dir);
    warn_replaceable_dirs(&groups);
}

/// Deletes the temp files killed runs left next to `groups`' outputs and state files, reading
/// each directory once: with every output in one directory, reading it once per output made
/// start-up quadratic in the number of clients.
fn remove_stale_temps(groups: &[&Group], state_dir: &Path) {
    let state_files: Vec<PathBuf> = groups
        .iter()
        .flat_map(|g| g.members())
        .map(|m| state::path(state_dir, &m.name))
        .collect();
    let outputs = groups
        .iter()
        .flat_map(|g| g.members())
        .flat_map(|m| &m.outputs)
        .map(|o| &o.path);
    let mut by_dir: BTreeMap<&Path, HashSet<&str>> = BTreeMap::new();
    for path in outputs.chain(&state_files) {
        if let Ok((dir, name)) = atomic::split(path) {
            by_dir.entry(dir).or_default().insert(name);
        }
    }
    for (dir, names) in by_dir {
        let found = match atomic::stale_temps(dir, &names) {
            Ok(found) => found,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot clean up temp files");
                continue;
            }
        };
        for (target, temp) in found {
            // Held: a task a reload left behind may still be writing its temp file there (it
            // is gone, renamed into place, once held).
            let _held = lock::hold(&target);
            match std::fs::remove_file(&temp) {
                Ok(()) => info!(path = %temp.display(), "removed a temp file left by an interrupted run"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!(path = %temp.display(), error = %e, "cannot clean up temp files"),
            }
        }
    }
}

/// Warns once about each output directory others may write (see `output::replaceable_by`),
/// naming the clients that write there.
fn warn_replaceable_dirs(groups: &[&Group]) {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs: BTreeMap<&Path, Vec<&ClientName>> = BTreeMap::new();
    for member in groups.iter().flat_map(|g| g.members()) {
        let mut member_dirs: Vec<&Path> = member.outputs.iter().filter_map(|o| o.path.parent()).collect();
        member_dirs.sort();
        member_dirs.dedup();
        for dir in member_dirs {
            dirs.entry(dir).or_default().push(&member.name);
        }
    }
    for (dir, clients) in dirs {
        let Ok(mode) = std::fs::metadata(dir).map(|m| m.permissions().mode()) else {
            continue;
        };
        if let Some(who) = crate::output::replaceable_by(mode) {
            warn!(
                clients = %first_names(&clients),
                dir = %dir.display(),
                mode = %format!("{:04o}", mode & 0o7777),
                "an output directory can be written by {who}: {}",
                crate::output::REPLACEABLE_FIX
            );
        }
    }
}

/// `a,b,c` — or, past five names, `a,b,c,d,e and 995 more`.
fn first_names(names: &[&ClientName]) -> String {
    const SHOWN: usize = 5;
    let shown: Vec<&str> = names.iter().take(SHOWN).map(|n| n.as_str()).collect();
    match names.len().saturating_sub(SHOWN) {
        0 => shown.join(","),
        more => format!("{} and {more} more", shown.join(",")),
    }
}
