//! What a reload changes, for its log line: clients added, changed, removed, unchanged.

use std::collections::BTreeSet;

use crate::config::{ClientName, Config};

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
