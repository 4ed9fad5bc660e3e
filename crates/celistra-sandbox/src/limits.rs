//! Resource limits of an agent (memory, processes, CPU weight): where this machine can enforce each
//! one (a cgroup v2 controller, else a cgroup v1 hierarchy, else an rlimit), writing them, and a
//! report of what was applied that the daemon can show.

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use rustix::process::{Resource, Rlimit};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::cgroup::{self, AgentCgroup, CgroupLayout, CgroupRoot, CgroupVersion, V1Instance};

/// The limits asked for one agent; `None` leaves a resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// Memory in bytes, swap included (`--memory-max`).
    pub memory_max: Option<u64>,
    /// Processes of the agent, threads included (`--pids-max`).
    pub pids_max: Option<u32>,
    /// Share of CPU time under contention, `1..=10000`, 100 being the default: systemd's
    /// `CPUWeight` scale (`--cpu-weight`).
    pub cpu_weight: Option<u32>,
}

/// Below this an agent's shell cannot even start.
const MIN_MEMORY_MAX: u64 = 1 << 20;
const CPU_WEIGHTS: std::ops::RangeInclusive<u32> = 1..=10_000;
const DEFAULT_CPU_WEIGHT: u32 = 100;

impl ResourceLimits {
    /// Checks the values against what the kernel accepts.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(bytes) = self.memory_max
            && bytes < MIN_MEMORY_MAX
        {
            return Err(Error::InvalidLimit(format!(
                "memory_max {bytes} bytes is too small for any program to start: give at least {MIN_MEMORY_MAX} (1 MiB)"
            )));
        }
        if self.pids_max == Some(0) {
            return Err(Error::InvalidLimit(
                "pids_max 0 would not even allow the agent's own process: give at least 1".into(),
            ));
        }
        if let Some(weight) = self.cpu_weight
            && !CPU_WEIGHTS.contains(&weight)
        {
            return Err(Error::InvalidLimit(format!(
                "cpu_weight {weight} is out of range: give 1 to 10000 ({DEFAULT_CPU_WEIGHT} is the default share)"
            )));
        }
        Ok(())
    }

    fn get(&self, kind: LimitKind) -> Option<u64> {
        match kind {
            LimitKind::MemoryMax => self.memory_max,
            LimitKind::PidsMax => self.pids_max.map(u64::from),
            LimitKind::CpuWeight => self.cpu_weight.map(u64::from),
        }
    }
}

/// The kinds of limit, named as in [`ResourceLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    MemoryMax,
    PidsMax,
    CpuWeight,
}

impl LimitKind {
    pub const ALL: [LimitKind; 3] = [
        LimitKind::MemoryMax,
        LimitKind::PidsMax,
        LimitKind::CpuWeight,
    ];

    fn name(self) -> &'static str {
        match self {
            LimitKind::MemoryMax => "memory_max",
            LimitKind::PidsMax => "pids_max",
            LimitKind::CpuWeight => "cpu_weight",
        }
    }

    /// The cgroup controller that enforces it, in v1 and v2 alike.
    fn controller(self) -> &'static str {
        match self {
            LimitKind::MemoryMax => "memory",
            LimitKind::PidsMax => "pids",
            LimitKind::CpuWeight => "cpu",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What was applied for each requested limit of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppliedLimits(pub Vec<AppliedLimit>);

/// One requested limit and how it is enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedLimit {
    pub limit: LimitKind,
    pub requested: u64,
    pub enforcement: Enforcement,
}

/// The mechanism that enforces a limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mechanism", rename_all = "snake_case")]
pub enum Enforcement {
    /// Control files written in the agent's cgroup, in this order.
    Cgroup {
        version: CgroupVersion,
        dir: PathBuf,
        files: Vec<ControlFile>,
    },
    /// A resource limit (soft and hard) the agent's first process takes before exec; its
    /// descendants inherit it.
    Rlimit {
        resource: String,
        value: u64,
        /// How it differs from the cgroup limit that was asked for, and why there is no cgroup.
        notes: Vec<String>,
    },
    NotApplied {
        reason: String,
    },
}

/// One cgroup control file and the value written to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlFile {
    pub file: String,
    pub value: String,
}

impl fmt::Display for AppliedLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, limit) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{limit}")?;
        }
        Ok(())
    }
}

impl fmt::Display for AppliedLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}: {}", self.limit, self.requested, self.enforcement)
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Enforcement::Cgroup { version, files, .. } => {
                let version = match version {
                    CgroupVersion::V1 => "v1",
                    CgroupVersion::V2 => "v2",
                };
                write!(f, "cgroup {version}")?;
                for ControlFile { file, value } in files {
                    write!(f, " {file}={value}")?;
                }
                Ok(())
            }
            Enforcement::Rlimit {
                resource,
                value,
                notes,
            } => write!(f, "rlimit {resource}={value} ({})", notes.join("; ")),
            Enforcement::NotApplied { reason } => write!(f, "not applied: {reason}"),
        }
    }
}

/// Where this daemon instance enforces each kind of limit, decided once at start, and the v1
/// instance cgroups it created for them.
#[derive(Debug)]
pub struct ResourceControl {
    /// The v2 instance cgroup (the tracking [`CgroupRoot`]), whose children get v2 limits.
    v2_instance: Option<PathBuf>,
    v1_instances: Vec<V1Instance>,
    /// Indexed like [`LimitKind::ALL`].
    placements: [Placement; 3],
}

#[derive(Debug)]
enum Placement {
    /// The controller is available in the v2 instance cgroup.
    V2,
    /// In `v1_instances[instance]`.
    V1 { instance: usize },
    /// No cgroup can take it, for the reason given.
    Unavailable(String),
}

impl ResourceControl {
    /// Finds, per limit, the cgroup that can enforce it on this machine: a controller delegated to
    /// `tracking` (cgroup v2), else a mounted v1 hierarchy, where an instance cgroup is created under
    /// this daemon's own cgroup (after removing those an earlier daemon with the same `tag` left).
    pub fn create(tag: &str, instance: u32, tracking: Option<&CgroupRoot>) -> ResourceControl {
        let layout = CgroupLayout::detect().unwrap_or_else(|e| {
            tracing::info!("cannot read this process's cgroups from /proc: {e}");
            CgroupLayout::default()
        });
        let control = ResourceControl::with_layout(tag, instance, tracking, &layout);
        tracing::info!("resource limits: {control}");
        control
    }

    /// [`ResourceControl::create`] with the v1 hierarchies of `layout` rather than this machine's:
    /// an empty layout and no `tracking` leave only rlimits.
    pub fn with_layout(
        tag: &str,
        instance: u32,
        tracking: Option<&CgroupRoot>,
        layout: &CgroupLayout,
    ) -> ResourceControl {
        let v2_instance = tracking.map(|root| root.path().to_owned());
        let v2_controllers = v2_instance
            .as_ref()
            .and_then(|dir| fs::read_to_string(dir.join("cgroup.controllers")).ok())
            .unwrap_or_default();
        let mut v1_instances: Vec<V1Instance> = Vec::new();
        let placements = LimitKind::ALL.map(|kind| {
            let controller = kind.controller();
            let no_v2 = match &v2_instance {
                Some(_) if v2_controllers.split_whitespace().any(|c| c == controller) => {
                    return Placement::V2;
                }
                Some(dir) => format!(
                    "cgroup v2: the {controller} controller is not enabled in {}/cgroup.subtree_control (with systemd: Delegate=yes)",
                    dir.parent().unwrap_or(dir).display()
                ),
                None => "cgroup v2: no writable unified hierarchy".to_owned(),
            };
            if let Some(instance) = v1_instances
                .iter()
                .position(|i| i.controllers.iter().any(|c| c == controller))
            {
                return Placement::V1 { instance };
            }
            let no_v1 = match layout.v1_hierarchy(controller) {
                None => format!("cgroup v1: no {controller} hierarchy is mounted"),
                Some(hierarchy) => match V1Instance::create(hierarchy, tag, instance) {
                    Ok(instance) => {
                        v1_instances.push(instance);
                        return Placement::V1 {
                            instance: v1_instances.len() - 1,
                        };
                    }
                    Err(e) => format!("cgroup v1: {e}"),
                },
            };
            Placement::Unavailable(format!("{no_v2}; {no_v1}"))
        });
        ResourceControl {
            v2_instance,
            v1_instances,
            placements,
        }
    }

    fn placement(&self, kind: LimitKind) -> &Placement {
        &self.placements[kind as usize]
    }

    /// Applies `limits` for the next run of agent `agent_id`, whose v2 cgroup (if any) is `cgroup`.
    /// A limit no cgroup can take falls back to an rlimit; one that nothing can enforce is reported
    /// as not applied rather than failing the run. Fails only for invalid limits. Call it once per
    /// run: v1 cgroups are made fresh, and v2 limits not asked for again are reset.
    pub fn prepare(
        &self,
        agent_id: &str,
        limits: &ResourceLimits,
        cgroup: Option<&AgentCgroup>,
    ) -> Result<AgentLimits, Error> {
        limits.validate()?;
        let mut agent = AgentLimits::default();
        for kind in LimitKind::ALL {
            let Some(requested) = limits.get(kind) else {
                if let (Placement::V2, Some(cgroup)) = (self.placement(kind), cgroup) {
                    reset_v2(kind, cgroup.path());
                }
                continue;
            };
            let enforcement =
                match self.apply_in_cgroup(kind, requested, agent_id, cgroup, &mut agent) {
                    Ok(enforcement) => enforcement,
                    Err(no_cgroup) => agent.fall_back_to_rlimit(kind, requested, no_cgroup),
                };
            agent.applied.0.push(AppliedLimit {
                limit: kind,
                requested,
                enforcement,
            });
        }
        Ok(agent)
    }

    /// Writes the limit into the agent's cgroup of its controller, or says why it cannot.
    fn apply_in_cgroup(
        &self,
        kind: LimitKind,
        value: u64,
        agent_id: &str,
        cgroup: Option<&AgentCgroup>,
        agent: &mut AgentLimits,
    ) -> Result<Enforcement, String> {
        match self.placement(kind) {
            Placement::Unavailable(reason) => Err(reason.clone()),
            Placement::V2 => {
                let (Some(cgroup), Some(instance)) = (cgroup, &self.v2_instance) else {
                    return Err("cgroup v2: the agent has no cgroup".to_owned());
                };
                // Enabled on first use: an idle controller costs nothing.
                cgroup::write_control(
                    instance,
                    "cgroup.subtree_control",
                    &format!("+{}", kind.controller()),
                )
                .map_err(|e| e.to_string())?;
                let files = write_controls(
                    cgroup.path(),
                    &cgroup_writes(kind, CgroupVersion::V2, value),
                )
                .map_err(|e| e.to_string())?;
                Ok(Enforcement::Cgroup {
                    version: CgroupVersion::V2,
                    dir: cgroup.path().to_owned(),
                    files,
                })
            }
            Placement::V1 { instance } => {
                let dir = self.v1_instances[*instance].dir.join(agent_id);
                let first_in_hierarchy = !agent.v1_dirs.contains(&dir);
                if first_in_hierarchy {
                    // A fresh cgroup per run: no limit or straggler of an earlier run carries over.
                    cgroup::remove_cgroup(&dir, CgroupVersion::V1);
                    cgroup::create_or_reuse(&dir).map_err(|e| e.to_string())?;
                }
                match write_controls(&dir, &cgroup_writes(kind, CgroupVersion::V1, value)) {
                    Ok(files) => {
                        if first_in_hierarchy {
                            agent.v1_dirs.push(dir.clone());
                        }
                        Ok(Enforcement::Cgroup {
                            version: CgroupVersion::V1,
                            dir,
                            files,
                        })
                    }
                    Err(e) => {
                        if first_in_hierarchy {
                            let _ = fs::remove_dir(&dir);
                        }
                        Err(e.to_string())
                    }
                }
            }
        }
    }

    /// Kills what is left of agent `agent_id` in the v1 cgroups and removes its cgroups there, when
    /// the agent itself is removed (between runs they are replaced by [`ResourceControl::prepare`]).
    pub fn remove_agent(&self, agent_id: &str) {
        for instance in &self.v1_instances {
            cgroup::remove_cgroup(&instance.dir.join(agent_id), CgroupVersion::V1);
        }
    }

    /// Kills every process in the v1 instance cgroups and removes them (the v2 one belongs to the
    /// [`CgroupRoot`]).
    pub fn destroy(&self) {
        for instance in &self.v1_instances {
            instance.destroy();
        }
    }
}

impl fmt::Display for ResourceControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kind) in LimitKind::ALL.into_iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match self.placement(kind) {
                Placement::V2 => write!(f, "{kind}: cgroup v2 {}", kind.controller())?,
                Placement::V1 { instance } => write!(
                    f,
                    "{kind}: cgroup v1 in {}",
                    self.v1_instances[*instance].dir.display()
                )?,
                Placement::Unavailable(reason) => match rlimit_for(kind) {
                    Some(rlimit) => write!(f, "{kind}: rlimit {} ({reason})", rlimit.name)?,
                    None => write!(f, "{kind}: not available ({reason})")?,
                },
            }
        }
        Ok(())
    }
}

/// A control file to write, with its value.
struct CgroupWrite {
    file: &'static str,
    value: String,
    /// The file exists only with some kernel options (swap accounting); skipped when absent.
    optional: bool,
}

impl CgroupWrite {
    fn required(file: &'static str, value: impl ToString) -> CgroupWrite {
        CgroupWrite {
            file,
            value: value.to_string(),
            optional: false,
        }
    }

    fn optional(file: &'static str, value: impl ToString) -> CgroupWrite {
        CgroupWrite {
            optional: true,
            ..CgroupWrite::required(file, value)
        }
    }
}

/// The files that set limit `kind` to `value` in a cgroup of `version`, in the order to write them.
fn cgroup_writes(kind: LimitKind, version: CgroupVersion, value: u64) -> Vec<CgroupWrite> {
    match (kind, version) {
        // v2 has no memory+swap limit: without swap, memory.max bounds both.
        (LimitKind::MemoryMax, CgroupVersion::V2) => vec![
            CgroupWrite::required("memory.max", value),
            CgroupWrite::optional("memory.swap.max", 0),
        ],
        // memsw bounds memory+swap, so swap is no way around the limit. It must not be below
        // limit_in_bytes, hence the order (a fresh cgroup starts with both unlimited).
        (LimitKind::MemoryMax, CgroupVersion::V1) => vec![
            CgroupWrite::required("memory.limit_in_bytes", value),
            CgroupWrite::optional("memory.memsw.limit_in_bytes", value),
        ],
        (LimitKind::PidsMax, _) => vec![CgroupWrite::required("pids.max", value)],
        (LimitKind::CpuWeight, CgroupVersion::V2) => {
            vec![CgroupWrite::required("cpu.weight", value)]
        }
        // cpu.shares is 1024 for the default weight 100.
        (LimitKind::CpuWeight, CgroupVersion::V1) => {
            vec![CgroupWrite::required("cpu.shares", value * 1024 / 100)]
        }
    }
}

fn write_controls(dir: &Path, writes: &[CgroupWrite]) -> Result<Vec<ControlFile>, Error> {
    let mut written = Vec::with_capacity(writes.len());
    for write in writes {
        if write.optional && !dir.join(write.file).exists() {
            continue;
        }
        cgroup::write_control(dir, write.file, &write.value)?;
        written.push(ControlFile {
            file: write.file.to_owned(),
            value: write.value.clone(),
        });
    }
    Ok(written)
}

/// Puts back the kernel's defaults for a v2 limit an earlier run of the agent may have set.
fn reset_v2(kind: LimitKind, dir: &Path) {
    let defaults = match kind {
        LimitKind::MemoryMax => vec![
            CgroupWrite::optional("memory.max", "max"),
            CgroupWrite::optional("memory.swap.max", "max"),
        ],
        LimitKind::PidsMax => vec![CgroupWrite::optional("pids.max", "max")],
        LimitKind::CpuWeight => vec![CgroupWrite::optional("cpu.weight", DEFAULT_CPU_WEIGHT)],
    };
    if let Err(e) = write_controls(dir, &defaults) {
        tracing::warn!("cannot reset {kind} of {}: {e}", dir.display());
    }
}

/// The rlimit that stands in for a limit when no cgroup can enforce it.
struct RlimitFallback {
    resource: Resource,
    name: &'static str,
    /// How it differs from the cgroup limit.
    caveat: &'static str,
}

fn rlimit_for(kind: LimitKind) -> Option<RlimitFallback> {
    match kind {
        LimitKind::MemoryMax => Some(RlimitFallback {
            resource: Resource::As,
            name: "RLIMIT_AS",
            caveat: "bounds each process's address space, not the agent's memory in use: programs that reserve large mappings (JVMs, Go, sanitizers) fail early",
        }),
        LimitKind::PidsMax => Some(RlimitFallback {
            resource: Resource::Nproc,
            name: "RLIMIT_NPROC",
            caveat: "counts every process of the user, not of this agent, and does not bind root",
        }),
        LimitKind::CpuWeight => None,
    }
}

/// The limits of one run of an agent: the v1 cgroups it joins and the rlimits it takes before exec,
/// and the report of what was applied. Give it to the spawn in [`crate::SpawnSpec::limits`].
#[derive(Debug, Default)]
pub struct AgentLimits {
    applied: AppliedLimits,
    v1_dirs: Vec<PathBuf>,
    rlimits: Vec<(Resource, u64)>,
}

impl AgentLimits {
    pub fn applied(&self) -> &AppliedLimits {
        &self.applied
    }

    /// Whether the limits put the agent in v1 cgroups (where the v2 controllers are missing).
    pub fn has_v1_cgroups(&self) -> bool {
        !self.v1_dirs.is_empty()
    }

    /// SIGKILLs every process in the agent's v1 cgroups (v1 has no `cgroup.kill`, so they are
    /// killed one by one; the v2 [`AgentCgroup::kill`] covers them too where it exists).
    pub fn kill(&self) {
        for dir in &self.v1_dirs {
            cgroup::kill_all(dir, CgroupVersion::V1);
        }
    }

    /// Kills what is left and removes the agent's v1 cgroups. Call it when the run has ended.
    pub fn remove(&self) {
        for dir in &self.v1_dirs {
            cgroup::remove_cgroup(dir, CgroupVersion::V1);
        }
    }

    fn fall_back_to_rlimit(
        &mut self,
        kind: LimitKind,
        value: u64,
        no_cgroup: String,
    ) -> Enforcement {
        let Some(fallback) = rlimit_for(kind) else {
            return Enforcement::NotApplied {
                reason: format!("{no_cgroup}; and there is no rlimit for it"),
            };
        };
        // Without CAP_SYS_RESOURCE (root here included) a hard limit can be lowered, never raised.
        let hard = rustix::process::getrlimit(fallback.resource).maximum;
        let applied = hard.map_or(value, |hard| hard.min(value));
        let mut notes = vec![
            fallback.caveat.to_owned(),
            format!("no cgroup: {no_cgroup}"),
        ];
        if applied < value {
            notes.push(format!(
                "lowered from {value} to the daemon's hard limit, which it cannot raise without CAP_SYS_RESOURCE"
            ));
        }
        self.rlimits.push((fallback.resource, applied));
        Enforcement::Rlimit {
            resource: fallback.name.to_owned(),
            value: applied,
            notes,
        }
    }

    /// What a spawn needs of these limits, as plain data that can cross to the keeper.
    pub(crate) fn for_launch(&self) -> LaunchLimits {
        LaunchLimits {
            v1_dirs: self.v1_dirs.clone(),
            rlimits: self
                .rlimits
                .iter()
                .map(|&(resource, value)| (RlimitResource::of(resource), value))
                .collect(),
        }
    }
}

/// The resources an rlimit fallback sets (see `rlimit_for`), by name on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RlimitResource {
    AddressSpace,
    Processes,
}

impl RlimitResource {
    fn of(resource: Resource) -> RlimitResource {
        if resource == Resource::Nproc {
            RlimitResource::Processes
        } else {
            RlimitResource::AddressSpace
        }
    }

    fn resource(self) -> Resource {
        match self {
            RlimitResource::AddressSpace => Resource::As,
            RlimitResource::Processes => Resource::Nproc,
        }
    }
}

/// [`AgentLimits`] as a spawn takes them: the v1 cgroups to join and the rlimits to set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LaunchLimits {
    v1_dirs: Vec<PathBuf>,
    rlimits: Vec<(RlimitResource, u64)>,
}

impl LaunchLimits {
    /// What the child needs between fork and exec, allocated before the fork.
    pub(crate) fn for_child(&self) -> Result<ChildLimits, std::io::Error> {
        Ok(ChildLimits {
            cgroup_procs: self
                .v1_dirs
                .iter()
                .map(|dir| cgroup::procs_path_c(dir))
                .collect::<Result<_, _>>()?,
            rlimits: self
                .rlimits
                .iter()
                .map(|&(resource, value)| (resource.resource(), value))
                .collect(),
        })
    }
}

/// [`AgentLimits`] as the child takes them on: only syscalls, no allocation.
pub(crate) struct ChildLimits {
    cgroup_procs: Vec<CString>,
    rlimits: Vec<(Resource, u64)>,
}

impl ChildLimits {
    /// Joins the v1 cgroups and sets the rlimits (soft and hard, so the agent cannot raise them).
    pub(crate) fn enter(&self) -> std::io::Result<()> {
        for procs in &self.cgroup_procs {
            cgroup::join_cgroup(procs)?;
        }
        for &(resource, value) in &self.rlimits {
            let limit = Rlimit {
                current: Some(value),
                maximum: Some(value),
            };
            rustix::process::setrlimit(resource, limit)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_what_the_kernel_accepts_are_refused_with_the_range() {
        let refused = |limits: ResourceLimits| limits.validate().unwrap_err().to_string();
        assert!(
            refused(ResourceLimits {
                cpu_weight: Some(0),
                ..ResourceLimits::default()
            })
            .contains("give 1 to 10000")
        );
        assert!(
            refused(ResourceLimits {
                cpu_weight: Some(10_001),
                ..ResourceLimits::default()
            })
            .contains("give 1 to 10000")
        );
        assert!(
            refused(ResourceLimits {
                pids_max: Some(0),
                ..ResourceLimits::default()
            })
            .contains("at least 1")
        );
        assert!(
            refused(ResourceLimits {
                memory_max: Some(4096),
                ..ResourceLimits::default()
            })
            .contains("at least 1048576")
        );
        let edges = ResourceLimits {
            memory_max: Some(MIN_MEMORY_MAX),
            pids_max: Some(1),
            cpu_weight: Some(10_000),
        };
        assert!(edges.validate().is_ok());
    }

    #[test]
    fn cpu_weight_maps_to_v1_shares_with_100_as_1024() {
        let shares = |weight| {
            cgroup_writes(LimitKind::CpuWeight, CgroupVersion::V1, weight)[0]
                .value
                .clone()
        };
        assert_eq!(shares(100), "1024");
        assert_eq!(shares(50), "512");
        assert_eq!(shares(1), "10", "above the kernel's minimum of 2");
        assert_eq!(
            shares(10_000),
            "102400",
            "below the kernel's maximum of 262144"
        );
    }

    /// cgroup v2 cannot be tried on the project's hybrid machines, so its files are checked on a
    /// directory laid out like a cgroup with the three controllers delegated.
    #[test]
    fn v2_limits_enable_the_controller_and_a_later_run_without_them_resets_the_files() {
        let instance = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            instance.path().join("cgroup.controllers"),
            "cpu memory pids\n",
        )
        .unwrap();
        let root = CgroupRoot::at(instance.path().to_owned());
        let cgroup = root.agent("ag-v2").expect("agent dir");
        std::fs::write(cgroup.path().join("memory.swap.max"), "max").unwrap();
        let control = ResourceControl::with_layout(
            "unit",
            std::process::id(),
            Some(&root),
            &CgroupLayout::default(),
        );
        let limits = ResourceLimits {
            memory_max: Some(64 << 20),
            pids_max: Some(20),
            cpu_weight: Some(200),
        };
        let agent = control.prepare("ag-v2", &limits, Some(&cgroup)).unwrap();
        assert_eq!(
            agent.applied().to_string(),
            "memory_max=67108864: cgroup v2 memory.max=67108864 memory.swap.max=0; \
             pids_max=20: cgroup v2 pids.max=20; cpu_weight=200: cgroup v2 cpu.weight=200"
        );
        let read = |file: &str| std::fs::read_to_string(cgroup.path().join(file)).unwrap();
        // Each limit enabled its controller; a plain file keeps only the last write.
        let enabled = std::fs::read_to_string(instance.path().join("cgroup.subtree_control"));
        assert_eq!(enabled.unwrap(), "+cpu");

        let next_run = ResourceLimits {
            pids_max: Some(30),
            ..ResourceLimits::default()
        };
        control.prepare("ag-v2", &next_run, Some(&cgroup)).unwrap();
        assert_eq!(read("memory.max"), "max");
        assert_eq!(read("memory.swap.max"), "max");
        assert_eq!(read("pids.max"), "30");
        assert_eq!(read("cpu.weight"), "100");
    }

    #[test]
    fn applied_limits_serialise_with_their_mechanism() {
        let applied = AppliedLimits(vec![
            AppliedLimit {
                limit: LimitKind::MemoryMax,
                requested: 1 << 30,
                enforcement: Enforcement::Cgroup {
                    version: CgroupVersion::V1,
                    dir: PathBuf::from("/sys/fs/cgroup/memory/celistra-x-1/ag-1"),
                    files: vec![ControlFile {
                        file: "memory.limit_in_bytes".into(),
                        value: "1073741824".into(),
                    }],
                },
            },
            AppliedLimit {
                limit: LimitKind::CpuWeight,
                requested: 50,
                enforcement: Enforcement::NotApplied {
                    reason: "no cpu controller".into(),
                },
            },
        ]);
        let json = serde_json::to_value(&applied).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {
                    "limit": "memory_max",
                    "requested": 1073741824,
                    "enforcement": {
                        "mechanism": "cgroup",
                        "version": "v1",
                        "dir": "/sys/fs/cgroup/memory/celistra-x-1/ag-1",
                        "files": [{ "file": "memory.limit_in_bytes", "value": "1073741824" }]
                    }
                },
                {
                    "limit": "cpu_weight",
                    "requested": 50,
                    "enforcement": { "mechanism": "not_applied", "reason": "no cpu controller" }
                }
            ])
        );
        assert_eq!(
            serde_json::from_value::<AppliedLimits>(json).unwrap(),
            applied
        );
        assert_eq!(
            applied.to_string(),
            "memory_max=1073741824: cgroup v1 memory.limit_in_bytes=1073741824; \
             cpu_weight=50: not applied: no cpu controller"
        );
    }
}
