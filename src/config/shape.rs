//! Every shape error in a file, not just the first. serde stops at the first unknown key or
//! wrong type; to find the next one, the document (as a `serde_yaml::Value`) is read again with
//! the offending node taken out, until it reads cleanly. Each problem is reported at its own
//! key, and what the validator then says about the repaired document is kept, except what only
//! follows from a node that was taken out ("client has no `token_url`" after its `token_url` was
//! refused).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_yaml::{Mapping, Value};

use super::error::{self, Problem};
use super::raw::RawConfig;

/// More repairs than this means something is wrong with the repair, not the file.
const MAX_REPAIRS: usize = 64;

/// What reading the document with its bad nodes taken out found.
pub struct Repaired {
    /// The problems, in the order they were met (the first is serde's first).
    pub problems: Vec<Problem>,
    /// The document without the bad nodes, if it then read cleanly.
    pub config: Option<RawConfig>,
    /// The key paths taken out (`clients.billing.outputs[0].mode`), and the keys misspelt ones
    /// meant: the validator's complaints about these follow from the problems already found.
    pub removed: Vec<String>,
}

/// The document as a tree whose mapping keys are their text as written: `31` and `0x1F` are
/// two keys here, as they are two client names to `RawConfig`, where `serde_yaml::Value` reads
/// both as the integer 31 and refuses the whole file, hiding every problem after the first. A
/// key written twice keeps its last value (serde has already reported it).
pub fn tree(source: &str) -> Result<Value, serde_yaml::Error> {
    serde_yaml::from_str::<Tree>(source).map(|t| t.0)
}

struct Tree(Value);

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        d.deserialize_any(TreeVisitor).map(Tree)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML document")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Tree(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key::<String>()? {
            let Tree(value) = map.next_value()?;
            mapping.insert(Value::String(key), value);
        }
        Ok(Value::Mapping(mapping))
    }
}

/// Reads `tree` (parsed from `source`) into a `RawConfig`, taking out each node that does not
/// fit until the rest does.
pub fn repair(source: &str, mut tree: Value) -> Repaired {
    let mut problems: Vec<Problem> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    // Keys whose absence the validator need not report (the ones misspelt keys meant).
    let mut suppressed: Vec<String> = Vec::new();
    for _ in 0..MAX_REPAIRS {
        let e = match serde_path_to_error::deserialize::<_, RawConfig>(tree.clone()) {
            Ok(config) => {
                removed.extend(suppressed);
                return Repaired {
                    problems,
                    config: Some(config),
                    removed,
                };
            }
            Err(e) => e,
        };
        let path: Vec<String> = e.path().iter().filter_map(segment).collect();
        let message = e.inner().to_string();
        let problem = error::at_path(source, &path, &message);
        // What a node taken out leaves behind (`{}` missing its `path`), or what a misspelt
        // key's absence causes, is no news.
        let shown = error::path_string(&path);
        let known = problems.iter().any(|p| same(p, &problem));
        let follows =
            removed.iter().any(|r| shown == *r || is_under(&shown, r)) || follows_from_removal(&problem, &suppressed);
        if !known && !follows {
            // A misspelt key's intended one is missing because of the misspelling: what the
            // validator says about it follows from this problem.
            if let Some(meant) = problem
                .message
                .split_once("did you mean `")
                .and_then(|(_, rest)| rest.split_once('`'))
                .map(|(k, _)| k)
            {
                suppressed.push(match problem.key.as_str() {
                    "" => meant.to_owned(),
                    key => format!("{key}.{meant}"),
                });
            }
            problems.push(problem);
        }
        // Take the node out; a node already taken out (an element replaced by `{}` that still
        // does not fit) takes its container with it.
        let mut target = path;
        loop {
            let shown = error::path_string(&target);
            let again = removed.contains(&shown);
            if !again && take_out(&mut tree, &target) {
                removed.push(shown);
                break;
            }
            if target.pop().is_none() {
                return Repaired {
                    problems,
                    config: None,
                    removed,
                };
            }
        }
    }
    Repaired {
        problems,
        config: None,
        removed,
    }
}

/// Whether the validator's `problem` only follows from a node taken out: it is at or under it,
/// or it is about the client or section the node was in and names the node's key.
pub fn follows_from_removal(problem: &Problem, removed: &[String]) -> bool {
    removed.iter().any(|r| {
        let under = problem.key == *r || is_under(&problem.key, r);
        let about = r
            .rsplit_once('.')
            .is_some_and(|(parent, key)| problem.key == parent && problem.message.contains(&format!("`{key}`")));
        // A client that could not be read is still a client: "no clients are defined" is not
        // news when one was taken out.
        let a_client = problem.key == "clients" && r.strip_prefix("clients.").is_some_and(|n| !n.contains('.'));
        under || about || a_client
    })
}

/// The same problem, found once by serde on the text and once on the tree, which may place it
/// one level apart (a map key, a list element).
pub fn same(a: &Problem, b: &Problem) -> bool {
    // A client named `31` is `clients.31` to serde and `clients[31]` to a path rebuilt from
    // the tree's segments.
    let (ka, kb) = (dotted(&a.key), dotted(&b.key));
    a.message == b.message && (ka == kb || is_under(&ka, &kb) || is_under(&kb, &ka))
}

/// `clients[31].outputs[0]` as `clients.31.outputs.0`.
fn dotted(key: &str) -> String {
    key.replace('[', ".").replace(']', "")
}

/// `clients.a.outputs[0].mode` is under `clients.a.outputs` and `clients.a.outputs[0]`.
fn is_under(key: &str, ancestor: &str) -> bool {
    key.starts_with(&format!("{ancestor}.")) || key.starts_with(&format!("{ancestor}["))
}

fn segment(s: &serde_path_to_error::Segment) -> Option<String> {
    use serde_path_to_error::Segment;
    match s {
        Segment::Map { key } => Some(key.clone()),
        Segment::Seq { index } => Some(index.to_string()),
        Segment::Enum { .. } | Segment::Unknown => None,
    }
}

/// Takes the node at `path` out of `tree`: a mapping's key is removed; a sequence's element is
/// replaced by an empty mapping, so the elements after it keep their indices (and positions).
fn take_out(tree: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = tree;
    for key in parents {
        node = match node {
            Value::Mapping(m) => match m.get_mut(key.as_str()) {
                Some(v) => v,
                None => return false,
            },
            Value::Sequence(s) => match key.parse::<usize>().ok().and_then(|i| s.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match node {
        Value::Mapping(m) => m.remove(last.as_str()).is_some(),
        Value::Sequence(s) => match last.parse::<usize>().ok().and_then(|i| s.get_mut(i)) {
            Some(v) => {
                *v = Value::Mapping(Default::default());
                true
            }
            None => false,
        },
        _ => false,
    }
}
