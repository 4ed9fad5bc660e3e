//! `apply`: the plan that makes a daemon's agents match a declared list of specs.

use std::collections::{BTreeMap, BTreeSet};

use celistra_proto::AgentSpec;

use crate::spec;

/// What `apply` must do, by agent name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyPlan {
    pub create: Vec<AgentSpec>,
    /// Specs whose agent exists under that name with a different spec: to be replaced and restarted.
    pub update: Vec<AgentSpec>,
    pub unchanged: Vec<String>,
    pub remove: Vec<String>,
}

/// Plans `desired` against the `current` specs. Every desired spec needs a valid, unique name.
pub fn plan(
    current: &[AgentSpec],
    desired: &[AgentSpec],
    prune: bool,
) -> Result<ApplyPlan, String> {
    let mut seen = BTreeSet::new();
    for (index, wanted) in desired.iter().enumerate() {
        spec::validate(wanted, true).map_err(|e| format!("agents[{index}]: {e}"))?;
        if !seen.insert(wanted.name.as_str()) {
            return Err(format!(
                "agents[{index}]: the name `{}` is listed twice",
                wanted.name
            ));
        }
    }
    let existing: BTreeMap<&str, &AgentSpec> =
        current.iter().map(|s| (s.name.as_str(), s)).collect();
    // The agents there will be: the file's, and (without prune) the others already here.
    let kept = current
        .iter()
        .filter(|s| !prune && !seen.contains(s.name.as_str()));
    let after: Vec<&AgentSpec> = desired.iter().chain(kept).collect();
    for wanted in desired {
        if let Some(missing) = wanted
            .depends_on
            .iter()
            .find(|d| !after.iter().any(|s| s.name == d.agent))
        {
            return Err(format!(
                "agent `{}`: depends_on names `{}`, which is neither in this file nor an agent \
                 here; add it to the file",
                wanted.name, missing.agent
            ));
        }
    }
    crate::depends::refuse_cycles(
        &crate::depends::graph(
            after
                .iter()
                .map(|s| (s.name.as_str(), s.depends_on.as_slice())),
        ),
        None,
    )?;
    let mut plan = ApplyPlan::default();
    for wanted in desired {
        match existing.get(wanted.name.as_str()) {
            None => plan.create.push(wanted.clone()),
            Some(&have) if have == wanted => plan.unchanged.push(wanted.name.clone()),
            Some(_) => plan.update.push(wanted.clone()),
        }
    }
    if prune {
        plan.remove = existing
            .keys()
            .filter(|name| !seen.contains(*name))
            .map(|n| (*n).to_owned())
            .collect();
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, command: &str) -> AgentSpec {
        AgentSpec {
            name: name.into(),
            command: command.into(),
            ..AgentSpec::default()
        }
    }

    #[test]
    fn sorts_specs_into_create_update_unchanged_remove() {
        let current = [spec("a", "x"), spec("b", "x"), spec("c", "x")];
        let desired = [spec("a", "x"), spec("b", "y"), spec("d", "x")];
        let kept = plan(&current, &desired, false).unwrap();
        assert_eq!(kept.create, [spec("d", "x")]);
        assert_eq!(kept.update, [spec("b", "y")]);
        assert_eq!(kept.unchanged, ["a"]);
        assert!(kept.remove.is_empty());
        assert_eq!(plan(&current, &desired, true).unwrap().remove, ["c"]);
    }

    #[test]
    fn refuses_a_dependency_cycle_and_an_agent_nobody_defines() {
        let on = |name: &str, deps: &[&str]| AgentSpec {
            depends_on: deps
                .iter()
                .map(|d| celistra_proto::Dependency {
                    agent: (*d).into(),
                    condition: celistra_proto::DependencyCondition::Ready,
                })
                .collect(),
            ..spec(name, "x")
        };
        let current = [on("db", &["web"])];
        let cycle = plan(&current, &[on("web", &["db"])], false).unwrap_err();
        assert!(
            cycle.starts_with("depends_on cycle: db → web → db"),
            "{cycle}"
        );
        // Pruned, the old `db` is gone: the file must define what it names.
        let unknown = plan(&current, &[on("web", &["db"])], true).unwrap_err();
        assert!(
            unknown.contains("names `db`, which is neither"),
            "{unknown}"
        );
        let ordered = plan(&[], &[on("web", &["db"]), on("db", &[])], true).unwrap();
        assert_eq!(ordered.create.len(), 2);
    }

    #[test]
    fn rejects_duplicates_and_unnamed_specs() {
        let err = plan(&[], &[spec("a", "x"), spec("a", "y")], false).unwrap_err();
        assert!(err.contains("agents[1]") && err.contains("twice"), "{err}");
        let err = plan(&[], &[spec("", "x")], false).unwrap_err();
        assert!(err.contains("agents[0]"), "{err}");
    }
}
