//! The order of things, as pure functions over the service definitions:
//! dependency levels and the start order, who waits for whom at stop, and
//! what a reload changes.
//!
//! Start: by dependency level (`after`), then priority (higher first), then
//! the order of definition; the main service last. Stop (README "Stopping"):
//! a service gets its stop signal as soon as every service that runs
//! `after` it has exited; services with no `after` relation stop at the
//! same time, the main service included. circus priorities keep their
//! meaning ("higher starts first and stops last"): among configured
//! services, a higher priority also waits for the lower ones to exit.

use crate::config::model::Service;
use std::cmp::Reverse;

/// What the plan needs to know of one service.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub name: &'a str,
    pub after: &'a [String],
    pub priority: i64,
    pub main: bool,
}

impl<'a> Node<'a> {
    pub fn of(s: &'a Service) -> Node<'a> {
        Node {
            name: &s.name,
            after: &s.after,
            priority: s.priority,
            main: s.main,
        }
    }
}

/// Indices of the services `i` names in `after` (unknown names ignored:
/// validation refused them, a reload may have removed one).
pub fn deps(nodes: &[Node], i: usize) -> Vec<usize> {
    let Some(n) = nodes.get(i) else {
        return Vec::new();
    };
    n.after
        .iter()
        .filter_map(|d| nodes.iter().position(|m| m.name == d.as_str()))
        .collect()
}

/// Dependency level of each service: 0 without `after`, else one more than
/// its deepest dependency; the main service comes after every other one.
/// A cycle (refused by validation) is cut rather than looped on.
pub fn levels(nodes: &[Node]) -> Vec<u32> {
    let n = nodes.len();
    let all_deps: Vec<Vec<usize>> = (0..n).map(|i| deps(nodes, i)).collect();
    let mut level = vec![0u32; n];
    for _ in 0..n {
        let mut changed = false;
        for (i, ds) in all_deps.iter().enumerate() {
            let want = ds
                .iter()
                .filter_map(|&d| level.get(d).map(|l| l + 1))
                .max()
                .unwrap_or(0)
                .min(n as u32);
            if let Some(l) = level.get_mut(i) {
                if *l != want {
                    *l = want;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let top = nodes
        .iter()
        .zip(&level)
        .filter(|(s, _)| !s.main)
        .map(|(_, l)| *l)
        .max()
        .unwrap_or(0);
    for (s, l) in nodes.iter().zip(level.iter_mut()) {
        if s.main {
            *l = top + 1;
        }
    }
    level
}

/// Indices in start order: level, then priority (higher first), then index.
pub fn start_order(nodes: &[Node]) -> Vec<usize> {
    let level = levels(nodes);
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|&i| {
        (
            level.get(i).copied().unwrap_or(0),
            Reverse(nodes.get(i).map(|s| s.priority).unwrap_or(0)),
            i,
        )
    });
    order
}

/// The names in the order `run` starts them (for `check`).
pub fn start_names(services: &[Service]) -> Vec<String> {
    let nodes: Vec<Node> = services.iter().map(Node::of).collect();
    start_order(&nodes)
        .into_iter()
        .filter_map(|i| services.get(i).map(|s| s.name.clone()))
        .collect()
}

/// The services that must have exited before `i` gets its stop signal:
/// those that run `after` it and, among configured services, those of a
/// lower priority.
pub fn stop_waits_for(nodes: &[Node], i: usize) -> Vec<usize> {
    let Some(me) = nodes.get(i) else {
        return Vec::new();
    };
    (0..nodes.len())
        .filter(|&j| j != i)
        .filter(|&j| {
            nodes.get(j).is_some_and(|o| {
                o.after.iter().any(|a| a == me.name)
                    || (!me.main && !o.main && o.priority < me.priority)
            })
        })
        .collect()
}

/// What a reload changes, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Two definitions of a service are the same if they differ only in where
/// they were written.
pub fn same_definition(a: &Service, b: &Service) -> bool {
    let mut b = b.clone();
    b.origin = a.origin.clone();
    *a == b
}

/// Compare the services running now with a new list.
pub fn diff(old: &[&Service], new: &[Service]) -> Diff {
    let mut d = Diff::default();
    for o in old {
        if !new.iter().any(|n| n.name == o.name) {
            d.removed.push(o.name.clone());
        }
    }
    for n in new {
        match old.iter().find(|o| o.name == n.name) {
            None => d.added.push(n.name.clone()),
            Some(o) if !same_definition(o, n) => d.changed.push(n.name.clone()),
            Some(_) => {}
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, after: &[&str], priority: i64) -> Service {
        let mut s = Service::new(name, vec!["x".into()]);
        s.after = after.iter().map(|a| a.to_string()).collect();
        s.priority = priority;
        s
    }

    fn names(services: &[Service], idx: &[usize]) -> Vec<String> {
        idx.iter().map(|&i| services[i].name.clone()).collect()
    }

    #[test]
    fn start_order_follows_after_then_priority() {
        let services = vec![
            Service::main(vec!["sh".into()]),
            svc("a", &["b"], 0),
            svc("b", &[], 1),
            svc("c", &[], 0),
            svc("d", &[], 5),
        ];
        assert_eq!(start_names(&services), vec!["d", "b", "c", "a", "main"]);
        let nodes: Vec<Node> = services.iter().map(Node::of).collect();
        assert_eq!(levels(&nodes), vec![2, 1, 0, 0, 0]);
    }

    #[test]
    fn a_cycle_is_cut() {
        let services = [svc("a", &["b"], 0), svc("b", &["a"], 0)];
        let nodes: Vec<Node> = services.iter().map(Node::of).collect();
        assert!(levels(&nodes).iter().all(|&l| l <= 2));
    }

    #[test]
    fn stop_waits_table() {
        // (services, for whom, who must have exited first)
        let web = svc("web", &[], 0);
        let worker = svc("worker", &["web"], 0);
        let db = svc("db", &[], 0);
        let high = svc("high", &[], 10);
        let main = Service::main(vec!["bash".into()]);
        let rows: Vec<(Vec<Service>, &str, Vec<&str>)> = vec![
            // The dependent stops first.
            (vec![web.clone(), worker.clone()], "web", vec!["worker"]),
            (vec![web.clone(), worker.clone()], "worker", vec![]),
            // No relation: at the same time, the main service included.
            (vec![web.clone(), db.clone(), main.clone()], "web", vec![]),
            (vec![web.clone(), db.clone(), main.clone()], "main", vec![]),
            (
                vec![web.clone(), worker.clone(), main.clone()],
                "web",
                vec!["worker"],
            ),
            // Higher priority stops last, but never waits for the main service.
            (
                vec![web.clone(), high.clone(), main.clone()],
                "high",
                vec!["web"],
            ),
            (vec![web.clone(), high.clone()], "web", vec![]),
        ];
        for (services, who, want) in rows {
            let nodes: Vec<Node> = services.iter().map(Node::of).collect();
            let i = services.iter().position(|s| s.name == who).expect("who");
            let got = names(&services, &stop_waits_for(&nodes, i));
            assert_eq!(
                got,
                want,
                "{who} in {:?}",
                services.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn reload_diff_table() {
        let keep = svc("keep", &[], 0);
        let change = svc("change", &[], 0);
        let drop = svc("drop", &[], 0);
        let mut changed = change.clone();
        changed.argv = vec!["y".into()];
        let mut moved = keep.clone();
        moved.origin.pos = crate::error::Pos::new(40, 3);
        let rows: Vec<(Vec<Service>, Vec<Service>, Diff)> = vec![
            (
                vec![keep.clone(), change.clone(), drop.clone()],
                vec![keep.clone(), changed.clone(), svc("new", &[], 0)],
                Diff {
                    added: vec!["new".into()],
                    removed: vec!["drop".into()],
                    changed: vec!["change".into()],
                },
            ),
            // Only its place in the file moved: unchanged.
            (vec![keep.clone()], vec![moved], Diff::default()),
            (vec![], vec![], Diff::default()),
        ];
        for (old, new, want) in rows {
            let old_refs: Vec<&Service> = old.iter().collect();
            assert_eq!(diff(&old_refs, &new), want);
        }
    }
}
