//! Sandbox blocks as the daemon reports them: each block the kernel reports (see
//! `SandboxControl::monitor_blocks`) becomes a `sandbox_block` event for everyone watching (and so
//! an audit entry) and a line on the agent's `sandbox` history stream.

use std::sync::{Arc, Weak};

use celistra_core::logtext::Stream;
use celistra_proto::{EventKind, SandboxBlock};
use celistra_sandbox::{AttributedBlock, BlockMonitor, Blocked};

use crate::services::{AgentDirectory, Services};

/// Starts reporting blocks (when this daemon can: see `monitor_blocks`), until the monitor is
/// dropped.
pub(crate) fn report_blocks(
    services: &Arc<Services>,
    agents: Weak<dyn AgentDirectory>,
) -> Option<BlockMonitor> {
    let (sender, mut blocks) = tokio::sync::mpsc::unbounded_channel();
    let monitor = services
        .sandbox
        .monitor_blocks(services.cgroups.as_ref(), move |block| {
            let _ = sender.send(block);
        })?;
    let services = Arc::clone(services);
    tokio::spawn(async move {
        while let Some(block) = blocks.recv().await {
            let Some(agents) = agents.upgrade() else {
                return;
            };
            publish_block(&services, agents.as_ref(), block);
        }
    });
    Some(monitor)
}

/// One block: an event for everyone watching, and a line in the agent's history.
fn publish_block(services: &Services, agents: &dyn AgentDirectory, attributed: AttributedBlock) {
    let Some(agent) = agents.lookup(&attributed.agent_id) else {
        return;
    };
    let block = wire_block(attributed, agent.name);
    let note = format!(
        "celistra sandbox: blocked {} (pid {}{})\n",
        block.summary,
        block.pid,
        block
            .exe
            .as_deref()
            .map(|exe| format!(", {exe}"))
            .unwrap_or_default()
    );
    let agent_id: Arc<str> = Arc::from(block.agent_id.as_str());
    services.history.append(
        &agent_id,
        agent.history_run,
        Stream::Sandbox,
        block.time_ms,
        bytes::Bytes::from(note),
    );
    services.events.publish(EventKind::SandboxBlock {
        block: Box::new(block),
    });
}

fn wire_block(attributed: AttributedBlock, name: String) -> SandboxBlock {
    let AttributedBlock {
        agent_id,
        block,
        suppressed,
    } = attributed;
    let summary = block.what.to_string();
    let (kind, access, target) = match block.what {
        Blocked::Filesystem { access, path } => ("filesystem", access.join(","), path),
        Blocked::Network { access, port } => ("network", access, Some(port.to_string())),
        Blocked::Scope { access, target } => ("scope", access, target),
        Blocked::Syscall { number, name } => {
            ("syscall", name.unwrap_or_else(|| number.to_string()), None)
        }
    };
    SandboxBlock {
        agent_id,
        name,
        time_ms: block.time_ms,
        kind: kind.to_owned(),
        access,
        target,
        summary,
        pid: block.pid,
        exe: block.exe,
        suppressed,
    }
}
