//! `depends_on`: a spec's dependency list, the graph of all agents' dependencies and its cycles,
//! when a dependency is met, and the order agents stop in (dependents first).

use std::collections::{BTreeMap, BTreeSet};

use celistra_proto::{AgentState, Dependency, DependencyCondition};

use crate::names;

/// Checks one spec's list: names well formed, none twice, not itself.
pub fn check_list(name: &str, depends_on: &[Dependency]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for dependency in depends_on {
        names::validate_name(&dependency.agent).map_err(|e| format!("depends_on: {e}"))?;
        if dependency.agent == name {
            return Err(format!(
                "depends_on: `{name}` cannot depend on itself; remove it from its own list"
            ));
        }
        if !seen.insert(dependency.agent.as_str()) {
            return Err(format!(
                "depends_on: `{}` is listed twice; keep one entry with the condition you need",
                dependency.agent
            ));
        }
    }
    Ok(())
}

/// The dependency graph: each agent's name with the names it depends on.
pub type Graph<'a> = BTreeMap<&'a str, Vec<&'a str>>;

/// Builds the graph of `(name, depends_on)` pairs.
pub fn graph<'a>(specs: impl IntoIterator<Item = (&'a str, &'a [Dependency])>) -> Graph<'a> {
    specs
        .into_iter()
        .map(|(name, deps)| (name, deps.iter().map(|d| d.agent.as_str()).collect()))
        .collect()
}

/// Refuses a graph with a cycle, naming it: `depends_on cycle: a → b → c → a`, told from `from`
/// when it is on it (the agent being changed). Names that are not agents of the graph end a path
/// (they are not a cycle).
pub fn refuse_cycles(graph: &Graph<'_>, from: Option<&str>) -> Result<(), String> {
    match find_cycle(graph) {
        Some(mut cycle) => {
            if let Some(at) = from.and_then(|name| cycle.iter().position(|n| *n == name)) {
                cycle.pop();
                cycle.rotate_left(at);
                cycle.push(cycle[0]);
            }
            Err(format!(
                "depends_on cycle: {}; remove one of these dependencies",
                cycle.join(" → ")
            ))
        }
        None => Ok(()),
    }
}

/// A cycle of the graph as the path that closes it (`[a, b, c, a]`), the first one found walking
/// names in order.
pub fn find_cycle<'a>(graph: &Graph<'a>) -> Option<Vec<&'a str>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    for &start in graph.keys() {
        if marks.contains_key(start) {
            continue;
        }
        // Depth first without recursion: each frame is a node and the index of its next edge.
        let mut path: Vec<(&str, usize)> = vec![(start, 0)];
        marks.insert(start, Mark::OnPath);
        while let Some((node, next)) = path.last_mut() {
            let edges = graph.get(node).map_or(&[][..], Vec::as_slice);
            let Some(&to) = edges.get(*next) else {
                marks.insert(node, Mark::Done);
                path.pop();
                continue;
            };
            *next += 1;
            match marks.get(to) {
                Some(Mark::OnPath) => {
                    let from = path.iter().position(|(n, _)| *n == to).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[from..].iter().map(|(n, _)| *n).collect();
                    cycle.push(to);
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None if graph.contains_key(to) => {
                    marks.insert(to, Mark::OnPath);
                    path.push((to, 0));
                }
                None => {}
            }
        }
    }
    None
}

/// Waves of names to stop one after the other, each wave all at once: an agent stops in a wave
/// after every agent that depends on it. What a cycle would hold back comes last.
pub fn stop_waves(graph: &Graph<'_>) -> Vec<Vec<String>> {
    let mut left: BTreeSet<&str> = graph.keys().copied().collect();
    let mut waves = vec![];
    while !left.is_empty() {
        let needed: BTreeSet<&str> = left
            .iter()
            .flat_map(|name| graph.get(name).into_iter().flatten().copied())
            .collect();
        let wave: Vec<&str> = left
            .iter()
            .copied()
            .filter(|name| !needed.contains(name))
            .collect();
        let wave = if wave.is_empty() {
            left.iter().copied().collect()
        } else {
            wave
        };
        for name in &wave {
            left.remove(name);
        }
        waves.push(wave.into_iter().map(str::to_owned).collect());
    }
    waves
}

/// What is known of a dependency when deciding whether it is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub state: AgentState,
    pub ready: Option<bool>,
    pub exit_code: Option<i32>,
}

/// Whether `condition` holds for an agent observed as `seen`.
pub fn met(condition: DependencyCondition, seen: Observed) -> bool {
    let running = matches!(
        seen.state,
        AgentState::Running | AgentState::WaitingApproval
    );
    match condition {
        DependencyCondition::Started => running,
        DependencyCondition::Ready => running && seen.ready != Some(false),
        DependencyCondition::Completed => {
            seen.state == AgentState::Exited && seen.exit_code == Some(0)
        }
    }
}

/// What an agent waits for, in words: `db (ready), migrate (completed)`; `unknown` marks a name
/// that is no agent.
pub fn describe_unmet(unmet: &[(&Dependency, bool)]) -> String {
    unmet
        .iter()
        .map(|(dependency, known)| {
            if *known {
                format!("{} ({})", dependency.agent, dependency.condition.as_str())
            } else {
                format!(
                    "{} ({}; no such agent)",
                    dependency.agent,
                    dependency.condition.as_str()
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(agent: &str) -> Dependency {
        Dependency {
            agent: agent.into(),
            condition: DependencyCondition::Ready,
        }
    }

    #[test]
    fn a_list_refuses_itself_duplicates_and_bad_names() {
        assert!(check_list("web", &[dep("db"), dep("cache")]).is_ok());
        assert!(
            check_list("web", &[dep("web")])
                .unwrap_err()
                .contains("itself")
        );
        assert!(
            check_list("web", &[dep("db"), dep("db")])
                .unwrap_err()
                .contains("listed twice")
        );
        assert!(check_list("web", &[dep("no spaces")]).is_err());
    }

    #[test]
    fn a_cycle_is_named_from_where_it_closes() {
        let (a, b, c, d) = ([dep("b")], [dep("c")], [dep("a")], [dep("a")]);
        let g = graph([("a", &a[..]), ("b", &b[..]), ("c", &c[..]), ("d", &d[..])]);
        assert_eq!(
            refuse_cycles(&g, None).unwrap_err(),
            "depends_on cycle: a → b → c → a; remove one of these dependencies"
        );
        assert!(
            refuse_cycles(&g, Some("c"))
                .unwrap_err()
                .starts_with("depends_on cycle: c → a → b → c;")
        );
        let (web, api) = ([dep("api"), dep("db")], [dep("db"), dep("elsewhere")]);
        let fine = graph([("web", &web[..]), ("api", &api[..]), ("db", &[][..])]);
        assert_eq!(find_cycle(&fine), None);
        // A cycle reached from elsewhere is named without the path into it.
        let (x, y, z) = ([dep("y")], [dep("z")], [dep("y")]);
        let tail = graph([("x", &x[..]), ("y", &y[..]), ("z", &z[..])]);
        assert_eq!(find_cycle(&tail), Some(vec!["y", "z", "y"]));
    }

    #[test]
    fn dependents_stop_before_what_they_depend_on() {
        let (web, api, worker) = ([dep("api")], [dep("db")], [dep("db")]);
        let g = graph([
            ("web", &web[..]),
            ("api", &api[..]),
            ("worker", &worker[..]),
            ("db", &[][..]),
            ("lone", &[][..]),
        ]);
        assert_eq!(
            stop_waves(&g),
            [vec!["lone", "web", "worker"], vec!["api"], vec!["db"]]
        );
    }

    #[test]
    fn conditions_read_state_readiness_and_exit() {
        let seen = |state, ready, exit_code| Observed {
            state,
            ready,
            exit_code,
        };
        use DependencyCondition::*;
        assert!(met(Started, seen(AgentState::Running, Some(false), None)));
        assert!(!met(Started, seen(AgentState::Starting, None, None)));
        assert!(!met(Ready, seen(AgentState::Running, Some(false), None)));
        assert!(met(Ready, seen(AgentState::Running, None, None)));
        assert!(met(Ready, seen(AgentState::Running, Some(true), None)));
        assert!(met(Completed, seen(AgentState::Exited, None, Some(0))));
        assert!(!met(Completed, seen(AgentState::Failed, None, Some(1))));
        assert!(!met(Completed, seen(AgentState::Running, None, None)));
    }
}
