//! Groups of instances (`instances` in a spec): spawning a group as `NAME-0` … `NAME-(N-1)` from
//! its template (kept in `agents.json`), finding its members for the operations that act on
//! every one, scaling, and the rolling restart that replaces them one at a time.

use std::sync::Arc;
use std::time::Duration;

use celistra_core::spec::instance_name;
use celistra_proto::{AgentInfo, AgentSpec, AgentState, ApiError, ErrorCode, GroupInfo};

use super::{AgentHandle, Registry, Supervisor, name_taken, not_found};
use crate::actor::Actor;
use crate::now_ms;
use crate::store::StoredGroup;

/// The variable that tells an instance its number.
pub(crate) const INSTANCE_ENV: &str = "CELISTRA_INSTANCE";

/// How long a rolling restart waits for one new instance to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a restarted instance may take traffic, so a rolling restart can go on to the next: its
/// process runs and no readiness probe says otherwise.
fn ready_for_traffic(info: &AgentInfo) -> bool {
    info.state == AgentState::Running && info.ready != Some(false)
}

/// Instance `index`'s spec: the template with its own name and number, and no `instances`.
fn instance_spec(template: &AgentSpec, index: u32) -> AgentSpec {
    let mut spec = template.clone();
    spec.name = instance_name(&template.name, index);
    spec.instances = None;
    spec.env.insert(INSTANCE_ENV.to_owned(), index.to_string());
    spec
}

/// The group whose instance is named `name`, if any.
pub(super) fn group_of<'r>(registry: &'r Registry, name: &str) -> Option<&'r StoredGroup> {
    let (group, index) = name.rsplit_once('-')?;
    let index: u32 = index.parse().ok()?;
    registry
        .groups
        .get(group)
        .filter(|g| index < g.instances() && instance_name(group, index) == name)
}

impl Supervisor {
    /// The live instances of group `name`, lowest number first; `None` when there is no such group.
    pub(super) fn group_members(&self, name: &str) -> Option<Vec<Arc<AgentHandle>>> {
        let registry = self.read();
        let group = registry.groups.get(name)?;
        Some(
            (0..group.instances())
                .filter_map(|index| {
                    let id = registry.id_by_name.get(&instance_name(name, index))?;
                    registry.by_id.get(id).cloned()
                })
                .collect(),
        )
    }

    /// The agent `key` names, or every instance of the group it names.
    pub(super) fn agent_or_group(&self, key: &str) -> Result<Vec<Arc<AgentHandle>>, ApiError> {
        match self.find(key) {
            Ok(handle) => Ok(vec![handle]),
            Err(missing) => match self.group_members(key) {
                Some(members) if !members.is_empty() => Ok(members),
                _ => Err(missing),
            },
        }
    }

    pub(super) fn is_group(&self, name: &str) -> bool {
        self.read().groups.contains_key(name)
    }

    /// Creates a group from `template` (its `instances` says how many) and spawns its instances.
    /// Answers with the first instance.
    pub(super) async fn spawn_group(
        &self,
        mut template: AgentSpec,
        source: &str,
        actor: &Actor,
    ) -> Result<AgentInfo, ApiError> {
        {
            let registry = self.read();
            if template.name.is_empty() {
                template.name = celistra_core::names::generate_name(&template.command, |n| {
                    registry.id_by_name.contains_key(n) || registry.groups.contains_key(n)
                });
            }
        }
        self.check_spec(&template, true)?;
        // What would fail every instance fails the request before the group is recorded.
        self.services.secrets.check_references(&template, actor)?;
        self.services.config()?;
        if let Some(socket) = &template.socket {
            self.services.sockets.get(socket)?;
        }
        let count = template.instances.unwrap_or(1);
        {
            let mut registry = self.write();
            let taken = std::iter::once(template.name.clone())
                .chain((0..count).map(|i| instance_name(&template.name, i)))
                .find(|n| registry.id_by_name.contains_key(n) || registry.groups.contains_key(n));
            if let Some(name) = taken {
                return Err(name_taken(&name));
            }
            let group = StoredGroup {
                name: template.name.clone(),
                spec: template.clone(),
                source: source.to_owned(),
                created_at_ms: now_ms(),
            };
            self.services.store.put_group(group.clone());
            registry.groups.insert(group.name.clone(), group);
        }
        let spawns =
            (0..count).map(|index| self.spawn(instance_spec(&template, index), source, actor));
        let mut first = None;
        for spawned in futures_util::future::join_all(spawns).await {
            let info = spawned?;
            first.get_or_insert(info);
        }
        first.ok_or_else(|| not_found(&template.name))
    }

    /// Gives group `name` `instances` instances: spawns the missing ones, or removes the
    /// highest-numbered ones.
    pub(crate) async fn scale(
        &self,
        name: &str,
        instances: u32,
        source: &str,
        actor: &Actor,
    ) -> Result<GroupInfo, ApiError> {
        self.refuse_if_stopping()?;
        let mut template = self.template(name)?;
        let before = template.instances.unwrap_or(1);
        template.instances = Some(instances);
        self.check_spec(&template, true)?;
        for index in (instances..before).rev() {
            match self
                .remove(&instance_name(name, index), &Default::default(), actor)
                .await
            {
                Err(e) if e.code == ErrorCode::NotFound => {}
                removed => {
                    removed?;
                }
            }
        }
        self.set_template(name, template.clone());
        for index in before..instances {
            self.spawn(instance_spec(&template, index), source, actor)
                .await?;
        }
        self.services.audit.record(
            actor,
            "group_scaled",
            name,
            serde_json::json!({ "from": before, "to": instances }),
        );
        self.sync().await?;
        self.group_info(name)
    }

    /// Restarts group `name`'s instances one at a time, each time waiting until the new one may
    /// take traffic before the next goes down. The shared socket stays open throughout, so
    /// connections queue rather than being refused.
    pub(crate) async fn rolling_restart(
        &self,
        name: &str,
        actor: &Actor,
    ) -> Result<GroupInfo, ApiError> {
        self.refuse_if_stopping()?;
        let members = self.group_members(name).ok_or_else(|| no_group(name))?;
        for member in members {
            let run_before = member.info().run;
            self.restart(&member.id, actor).await?;
            let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
            loop {
                let info = member.info().clone();
                if info.run > run_before && ready_for_traffic(&info) {
                    break;
                }
                if tokio::time::Instant::now() >= deadline || !info.state.is_active() {
                    return Err(ApiError::new(
                        ErrorCode::Conflict,
                        format!(
                            "rolling restart of `{name}` stopped at `{}`: it is {} after {} s \
                             (last error: {}); the instances after it were not restarted; see \
                             `celistrad ctl logs {}`",
                            info.name,
                            info.state.as_str(),
                            READY_TIMEOUT.as_secs(),
                            info.last_error.as_deref().unwrap_or("none"),
                            info.name,
                        ),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.group_info(name)
    }

    /// `apply` of a changed spec where a group is involved (before, after or both): a change of
    /// size alone scales the group; any other change replaces what was there, so every instance
    /// runs the new spec.
    pub(super) async fn replace_group(
        &self,
        spec: AgentSpec,
        source: &str,
        actor: &Actor,
    ) -> Result<(), ApiError> {
        if let (Ok(current), Some(instances)) = (self.template(&spec.name), spec.instances) {
            let resized = AgentSpec {
                instances: Some(instances),
                ..current
            };
            if resized == spec {
                self.scale(&spec.name, instances, source, actor).await?;
                return Ok(());
            }
        }
        self.remove(&spec.name, &Default::default(), actor).await?;
        self.spawn(spec, source, actor).await?;
        Ok(())
    }

    /// Forgets group `name` once its instances are removed.
    pub(super) fn forget_group(&self, name: &str) {
        self.write().groups.remove(name);
        self.services.store.remove_group(name);
    }

    /// Group `name`'s template.
    pub(super) fn template(&self, name: &str) -> Result<AgentSpec, ApiError> {
        self.read()
            .groups
            .get(name)
            .map(|g| g.spec.clone())
            .ok_or_else(|| no_group(name))
    }

    fn set_template(&self, name: &str, spec: AgentSpec) {
        let mut registry = self.write();
        if let Some(group) = registry.groups.get_mut(name) {
            group.spec = spec;
            self.services.store.put_group(group.clone());
        }
    }

    pub(crate) fn group_info(&self, name: &str) -> Result<GroupInfo, ApiError> {
        let template = self.template(name)?;
        let members = self.group_members(name).unwrap_or_default();
        Ok(GroupInfo {
            name: name.to_owned(),
            instances: members.iter().map(|m| m.info().name.clone()).collect(),
            socket: template.socket,
        })
    }
}

fn no_group(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no group named `{name}`; a group is made with `ctl spawn --instances N`, and \
             `celistrad ctl ls` lists its instances"
        ),
    )
}
