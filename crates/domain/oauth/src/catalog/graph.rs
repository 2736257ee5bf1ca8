//! The implication graph of a scope catalog: which scopes each scope implies directly, its
//! closures and its cycles. Iterative throughout, so a long chain costs no stack.

use std::collections::{BTreeMap, BTreeSet};

/// Each scope's name, and the names of the scopes it implies directly.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

static NONE: BTreeSet<String> = BTreeSet::new();

fn edges<'g>(graph: &'g Graph, name: &str) -> std::collections::btree_set::Iter<'g, String> {
    graph.get(name).unwrap_or(&NONE).iter()
}

/// `roots` and every scope they imply, directly or through others. Names the graph does
/// not hold are kept as they are (the caller decides whether they are allowed).
pub fn closure<'a>(graph: &Graph, roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut work: Vec<String> = roots.into_iter().map(str::to_owned).collect();
    while let Some(name) = work.pop() {
        if seen.contains(&name) {
            continue;
        }
        work.extend(edges(graph, &name).filter(|n| !seen.contains(*n)).cloned());
        seen.insert(name);
    }
    seen
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// On the path being walked.
    Open,
    /// Walked: no cycle goes through it.
    Done,
}

/// A cycle of the graph, if it has one: the scopes along it, the first repeated at the end
/// (`["a", "b", "a"]`; a scope implying itself is `["a", "a"]`). Scopes are tried in name
/// order, so the answer is the same for the same graph.
pub fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    for root in graph.keys() {
        if marks.contains_key(root.as_str()) {
            continue;
        }
        marks.insert(root, Mark::Open);
        let mut path: Vec<&str> = vec![root];
        let mut pending = vec![edges(graph, root)];
        while let Some(next_edges) = pending.last_mut() {
            let Some(next) = next_edges.next() else {
                pending.pop();
                if let Some(done) = path.pop() {
                    marks.insert(done, Mark::Done);
                }
                continue;
            };
            match marks.get(next.as_str()) {
                Some(Mark::Done) => {}
                Some(Mark::Open) => {
                    let start = path.iter().position(|n| *n == next).unwrap_or_default();
                    let mut cycle: Vec<String> =
                        path.iter().skip(start).map(|n| (*n).to_owned()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                None => {
                    marks.insert(next, Mark::Open);
                    path.push(next);
                    pending.push(edges(graph, next));
                }
            }
        }
    }
    None
}
