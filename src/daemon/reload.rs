//! What a reload changes: the plan (`plan`), decided from the running groups and the two
//! configurations alone, which `tasks` carries out; and the summary for its log line.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use crate::config::{ClientName, Config, RequestSpec};
use crate::refresh::Group;
use crate::refresh::fingerprint::Fingerprint;

/// What a reload does to the running groups. Unchanged groups keep running untouched (same
/// token, same timer); the others stop. A member of a stopped group whose grant changed, or that
/// is removed, is no longer served from the moment the reload begins, and the files of one whose
/// grant changed hold a token it must no longer give out: they are withdrawn, each by the new
/// group that writes it (before that group starts) or on its own. A member whose grant is
/// unchanged keeps being served, and its new group takes the token over.
#[derive(Debug)]
pub(super) struct Plan {
    /// For each running group, in order: whether it keeps running.
    pub keep: Vec<bool>,
    /// Clients whose token stops being served at once.
    pub unserved: Vec<ClientName>,
    /// The groups to start, each with the withdrawn files it writes.
    pub start: Vec<(Group, Vec<PathBuf>)>,
    /// Withdrawn files that no new group writes.
    pub orphaned: Vec<PathBuf>,
}

/// The plan for replacing `old` (whose groups `running` are running) with `new`. A moved state
/// directory restarts every group, so that each saves where it now should.
pub(super) fn plan(running: &[&Group], old: &Config, new: &Config) -> Plan {
    let new_groups = Group::from_clients(&new.clients);
    let by_spec: HashMap<&RequestSpec, &Group> = new_groups.iter().map(|g| (&*g.spec, g)).collect();
    let by_member: HashMap<&ClientName, &Group> = new_groups
        .iter()
        .flat_map(|g| g.members().map(move |m| (&m.name, g)))
        .collect();
    let same_state_dir = old.state_dir == new.state_dir;
    let keep: Vec<bool> = running
        .iter()
        .map(|r| same_state_dir && by_spec.get(&*r.spec).is_some_and(|g| *g == *r))
        .collect();
    let (mut unserved, mut withdrawn) = (Vec::new(), BTreeSet::new());
    for r in running.iter().zip(&keep).filter(|(_, k)| !**k).map(|(r, _)| r) {
        let previous = Fingerprint::of(&r.spec);
        for member in r.members() {
            let now = by_member.get(&member.name);
            if now.is_some_and(|g| Fingerprint::of(&g.spec) == previous) {
                continue;
            }
            unserved.push(member.name.clone());
            if now.is_some() {
                withdrawn.extend(member.outputs.iter().map(|o| o.path.clone()));
            }
        }
    }
    let kept: HashMap<&RequestSpec, &Group> = running
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(r, _)| (&*r.spec, *r))
        .collect();
    let start = new_groups
        .iter()
        .filter(|g| kept.get(&*g.spec).is_none_or(|r| *r != *g))
        .map(|g| {
            let theirs = g
                .members()
                .flat_map(|m| &m.outputs)
                .filter_map(|o| withdrawn.take(&o.path))
                .collect();
            (g.clone(), theirs)
        })
        .collect();
    Plan {
        keep,
        unserved,
        start,
        orphaned: withdrawn.into_iter().collect(),
    }
}

/// The clients a reload adds, changes (their request or the state directory) and removes.
pub(super) struct Summary {
    pub added: Vec<ClientName>,
    pub changed: Vec<ClientName>,
    pub removed: Vec<ClientName>,
    pub unchanged: usize,
}

impl Summary {
    pub fn new(old: &Config, new: &Config) -> Summary {
        let mut s = Summary {
            added: Vec::new(),
            changed: Vec::new(),
            removed: Vec::new(),
            unchanged: 0,
        };
        for client in &new.clients {
            match old.clients.iter().find(|c| c.name == client.name) {
                None => s.added.push(client.name.clone()),
                Some(previous) if previous == client && old.state_dir == new.state_dir => s.unchanged += 1,
                Some(_) => s.changed.push(client.name.clone()),
            }
        }
        let names: BTreeSet<&ClientName> = new.clients.iter().map(|c| &c.name).collect();
        s.removed = old
            .clients
            .iter()
            .filter(|c| !names.contains(&c.name))
            .map(|c| c.name.clone())
            .collect();
        s
    }

    pub fn details(&self) -> String {
        let mut parts = Vec::new();
        for (what, names) in [
            ("added", &self.added),
            ("changed", &self.changed),
            ("removed", &self.removed),
        ] {
            if !names.is_empty() {
                let list: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
                parts.push(format!("{what}: {}", list.join(", ")));
            }
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse_str;

    fn config(clients: &str, state_dir: &str) -> Config {
        let yaml = format!(
            "state_dir: {state_dir}\ndefaults: {{ token_url: https://idp.example/t, client_id: a, client_secret: {{ file: /s }} }}\nclients:\n{clients}"
        );
        parse_str(&yaml, Path::new("/etc/tokend/config.yaml")).unwrap()
    }

    const BILLING: &str = "  billing: { audience: https://billing/, outputs: [{ path: /run/tokend/billing }] }\n";
    const REPORTS: &str = "  reports: { audience: https://reports/ }\n";

    /// The plan, in words: what keeps running, what is no longer served, which groups start with
    /// which withdrawn files, which files are withdrawn on their own.
    fn described(old: &Config, new: &Config) -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
        let groups = Group::from_clients(&old.clients);
        let running: Vec<&Group> = groups.iter().collect();
        let plan = plan(&running, old, new);
        let kept = running
            .iter()
            .zip(&plan.keep)
            .filter(|(_, k)| **k)
            .map(|(g, _)| g.label())
            .collect();
        let unserved = plan.unserved.iter().map(|n| n.to_string()).collect();
        let start = plan
            .start
            .iter()
            .map(|(g, files)| {
                let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                format!("{} [{}]", g.label(), files.join(" "))
            })
            .collect();
        let orphaned = plan.orphaned.iter().map(|f| f.display().to_string()).collect();
        (kept, unserved, start, orphaned)
    }

    /// What, old clients, new clients, new state_dir; then kept, unserved, started, orphaned.
    type Case<'a> = (
        &'a str,
        &'a str,
        String,
        &'a str,
        Vec<String>,
        Vec<String>,
        Vec<String>,
        Vec<String>,
    );

    #[test]
    fn reload_plans() {
        let both = format!("{BILLING}{REPORTS}");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases: Vec<Case> = vec![
            (
                "nothing changed",
                &both,
                both.clone(),
                "/var/lib/tokend",
                s(&["billing", "reports"]),
                s(&[]),
                s(&[]),
                s(&[]),
            ),
            (
                "a client added",
                BILLING,
                both.clone(),
                "/var/lib/tokend",
                s(&["billing"]),
                s(&[]),
                s(&["reports []"]),
                s(&[]),
            ),
            (
                "a client removed",
                &both,
                BILLING.to_owned(),
                "/var/lib/tokend",
                s(&["billing"]),
                s(&["reports"]),
                s(&[]),
                s(&[]),
            ),
            (
                "a grant changed: its file is withdrawn by the new group, which writes it again",
                &both,
                format!("{}{REPORTS}", BILLING.replace("https://billing/", "https://billing/v2")),
                "/var/lib/tokend",
                s(&["reports"]),
                s(&["billing"]),
                s(&["billing [/run/tokend/billing]"]),
                s(&[]),
            ),
            (
                "a grant and its file changed: the old file is withdrawn on its own",
                BILLING,
                BILLING
                    .replace("https://billing/", "https://billing/v2")
                    .replace("/run/tokend/billing", "/run/tokend/billing-v2"),
                "/var/lib/tokend",
                s(&[]),
                s(&["billing"]),
                s(&["billing []"]),
                s(&["/run/tokend/billing"]),
            ),
            (
                "only an output changed: restarted, still served, nothing withdrawn",
                BILLING,
                BILLING.replace("/run/tokend/billing", "/run/tokend/other"),
                "/var/lib/tokend",
                s(&[]),
                s(&[]),
                s(&["billing []"]),
                s(&[]),
            ),
            (
                "the state directory moved: every group restarts, every token still served",
                &both,
                both.clone(),
                "/srv/tokend",
                s(&[]),
                s(&[]),
                s(&["billing []", "reports []"]),
                s(&[]),
            ),
            (
                "one member of a shared group changed its grant: the other is still served",
                "  a: { audience: https://x/ }\n  b: { audience: https://x/ }\n",
                "  a: { audience: https://x/ }\n  b: { audience: https://y/ }\n".to_owned(),
                "/var/lib/tokend",
                s(&[]),
                s(&["b"]),
                s(&["a []", "b []"]),
                s(&[]),
            ),
        ];
        for (what, old, new, state_dir, kept, unserved, started, orphaned) in cases {
            let (old, new) = (config(old, "/var/lib/tokend"), config(&new, state_dir));
            assert_eq!(described(&old, &new), (kept, unserved, started, orphaned), "{what}");
        }
    }
}
