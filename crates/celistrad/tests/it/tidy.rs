//! The invariants of ARCHITECTURE.md that are about the source tree rather than behaviour, as
//! tests (rust-analyzer's `tidy.rs` is the model): which crates may use SQL, tokio or `unsafe`,
//! the layering of the crates read from their Cargo.toml files, module docs on every file, and no
//! import cycle among the daemon's modules. Spawning, signalling and printing are clippy's job
//! (`clippy.toml`, `[workspace.lints]`). Each failure names the file and the rule it breaks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose `.rs` files may contain `unsafe`, and only these files (paths from the
/// workspace root); each carries `#[allow(unsafe_code)]` where it is declared.
const UNSAFE_FILES: &[&str] = &[
    "crates/celistra-sandbox/src/spawn.rs",
    "crates/celistra-sandbox/src/linux/launcher.rs",
    "crates/celistra-sandbox/src/linux/mounts.rs",
    "crates/celistra-sandbox/src/linux/syscall_filter.rs",
    "crates/celistra-sandbox/src/linux/plan.rs",
    "crates/celistra-sandbox/src/memory.rs",
    "crates/celistra-sandbox/src/fork.rs",
    "crates/celistra-sandbox/src/audit/live_tests.rs",
];

/// Our crates each crate may depend on (normal and build dependencies), from ARCHITECTURE.md's
/// code map. A new edge is a design change: update the document and this table together.
const LAYERS: &[(&str, &[&str])] = &[
    ("celistra-proto", &[]),
    ("celistra-core", &["celistra-proto"]),
    ("celistra-sandbox", &[]),
    ("celistra-audit", &["celistra-core"]),
    ("celistra-history", &["celistra-core", "celistra-proto"]),
    ("celistra-notify", &["celistra-core", "celistra-proto"]),
    ("celistra-dashboard", &[]),
    ("celistra-client", &["celistra-proto"]),
    (
        "celistra-daemon",
        &[
            "celistra-proto",
            "celistra-core",
            "celistra-sandbox",
            "celistra-history",
            "celistra-audit",
            "celistra-notify",
            "celistra-dashboard",
            // A fleet node's link to its hub pins the hub's certificate as a client does.
            "celistra-client",
        ],
    ),
    (
        "celistrad",
        &[
            "celistra-proto",
            "celistra-core",
            "celistra-daemon",
            "celistra-client",
            "celistra-sandbox",
            "celistra-audit",
        ],
    ),
    (
        "celistra-bench",
        &[
            "celistra-proto",
            "celistra-client",
            "celistra-audit",
            "celistra-notify",
            // `--only auth` runs a daemon in-process and calls its router directly.
            "celistra-daemon",
        ],
    ),
];

/// Every dependency proto and core may have: pure data and text crates, no I/O, no async runtime,
/// no clock or randomness. Adding one here is a design decision, not a formality.
const PURE_DEPS: &[(&str, &[&str])] = &[
    ("celistra-proto", &["serde", "serde_json", "utoipa"]),
    (
        "celistra-core",
        &[
            "celistra-proto",
            "serde",
            "serde_json",
            "serde_path_to_error",
            "thiserror",
            "memchr",
            "vte",
            "humantime",
            "chrono",
            "chrono-tz",
            "croner",
            "regex",
            "globset",
            // A YAML parser over a string (`import::pm2`); its reading of files is not used.
            "saphyr",
            "proptest",
        ],
    ),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Paths relative to the workspace root, so messages name files as a reader sees them.
fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every crate directory under `crates/`, by package name (the directory name).
fn crates() -> Vec<(String, PathBuf)> {
    let mut crates: Vec<(String, PathBuf)> = std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    crates.sort();
    crates
}

/// The `.rs` files a crate compiles: `src`, `tests`, `benches` and `build.rs`.
fn crate_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in ["src", "tests", "benches", "examples"] {
        rust_files(&dir.join(sub), &mut files);
    }
    if dir.join("build.rs").is_file() {
        files.push(dir.join("build.rs"));
    }
    files.sort();
    files
}

/// The files whose contents the token rules scan: every crate's sources but this one, which names
/// the tokens it looks for.
fn scanned_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = crate_sources(dir);
    files.retain(|f| !f.ends_with("crates/celistrad/tests/it/tidy.rs"));
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", relative(path)))
}

/// The code of a line without its `//` comment (good enough for the tokens checked here, none of
/// which appear inside string literals in this tree).
fn code_of(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

/// Dependencies of a Cargo.toml by section (`dependencies`, `dev-dependencies`,
/// `build-dependencies`), read line by line: the manifests here use only `name = …` and
/// `name.workspace = true` forms.
fn dependencies(manifest: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut sections: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in manifest.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = header.ends_with("dependencies").then(|| header.to_owned());
            continue;
        }
        let Some(section) = &current else { continue };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line
            .split(['=', '.'])
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if !name.is_empty() {
            sections
                .entry(section.clone())
                .or_default()
                .insert(name.to_owned());
        }
    }
    sections
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let mut missing = Vec::new();
    for (_, dir) in crates() {
        for file in crate_sources(&dir) {
            if !read(&file).starts_with("//!") {
                missing.push(relative(&file));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "rule: every .rs file opens with a `//!` line saying what it is for; missing in:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_crate_inherits_the_workspace_lints() {
    let mut drifted = Vec::new();
    for (_, dir) in crates() {
        let manifest = read(&dir.join("Cargo.toml"));
        if !manifest.contains("[lints]\nworkspace = true") {
            drifted.push(relative(&dir.join("Cargo.toml")));
        }
    }
    assert!(
        drifted.is_empty(),
        "rule: every crate has `[lints] workspace = true` (a crate that differs allows lints in \
         its source, with a reason); not in:\n  {}",
        drifted.join("\n  ")
    );
}

#[test]
fn only_celistra_history_uses_sql() {
    const SQL: &[&str] = &[
        "rusqlite",
        "SELECT ",
        "INSERT INTO",
        "CREATE TABLE",
        "DELETE FROM",
        "PRAGMA ",
    ];
    let mut found = Vec::new();
    for (name, dir) in crates() {
        if name == "celistra-history" {
            continue;
        }
        if dependencies(&read(&dir.join("Cargo.toml")))
            .values()
            .any(|deps| deps.contains("rusqlite"))
        {
            found.push(format!(
                "{}: depends on rusqlite",
                relative(&dir.join("Cargo.toml"))
            ));
        }
        for file in scanned_sources(&dir) {
            for (n, line) in read(&file).lines().enumerate() {
                if let Some(token) = SQL.iter().find(|t| code_of(line).contains(*t)) {
                    found.push(format!("{}:{}: `{}`", relative(&file), n + 1, token.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "rule: only celistra-history knows SQL and rusqlite (ask it through its API):\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn proto_and_core_have_no_tokio_and_no_io_dependencies() {
    let mut found = Vec::new();
    for (name, allowed) in PURE_DEPS {
        let dir = root().join("crates").join(name);
        let manifest = dir.join("Cargo.toml");
        for (section, deps) in dependencies(&read(&manifest)) {
            for dep in deps.iter().filter(|d| !allowed.contains(&d.as_str())) {
                found.push(format!("{}: [{section}] {dep}", relative(&manifest)));
            }
        }
        for file in scanned_sources(&dir) {
            for (n, line) in read(&file).lines().enumerate() {
                if code_of(line).contains("tokio") {
                    found.push(format!("{}:{}: tokio", relative(&file), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "rule: celistra-proto and celistra-core are pure (no I/O, no tokio, no clock); a \
         dependency outside the list in tests/it/tidy.rs (PURE_DEPS) or tokio found:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn unsafe_is_only_in_the_sandbox_modules_that_need_it() {
    const TOKENS: &[&str] = &[
        "unsafe {",
        "unsafe fn",
        "unsafe impl",
        "unsafe extern",
        "unsafe trait",
        "unsafe(",
    ];
    let mut found = Vec::new();
    for (_, dir) in crates() {
        for file in scanned_sources(&dir) {
            let name = relative(&file);
            if UNSAFE_FILES.contains(&name.as_str()) {
                continue;
            }
            for (n, line) in read(&file).lines().enumerate() {
                if TOKENS.iter().any(|t| code_of(line).contains(t)) {
                    found.push(format!("{name}:{}", n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "rule: `unsafe` lives only in {UNSAFE_FILES:?} (celistra-sandbox, each module allowed \
         where it is declared); found in:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn crates_depend_only_on_the_layers_below_them() {
    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut found = Vec::new();
    for (name, dir) in crates() {
        let manifest = dir.join("Cargo.toml");
        let Some(allowed) = layers.get(name.as_str()) else {
            found.push(format!(
                "{}: a crate missing from LAYERS in tests/it/tidy.rs",
                relative(&manifest)
            ));
            continue;
        };
        for (section, deps) in dependencies(&read(&manifest)) {
            if section == "dev-dependencies" {
                continue;
            }
            for dep in deps
                .iter()
                .filter(|d| d.starts_with("celistra-") && !allowed.contains(&d.as_str()))
            {
                found.push(format!("{}: [{section}] {dep}", relative(&manifest)));
            }
        }
    }
    assert!(
        found.is_empty(),
        "rule: the crate layering of ARCHITECTURE.md (e.g. celistra-client depends on proto only \
         among our crates); edges not in LAYERS:\n  {}",
        found.join("\n  ")
    );
}

/// The top-level modules of celistra-daemon that each one names through `crate::…`, outside its
/// `#[cfg(test)]` tests (test code may reach anywhere).
fn daemon_imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("crates/celistra-daemon/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let path = file.strip_prefix(&src).unwrap();
        let module = path
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if module == "lib" {
            continue; // the crate root wires everything together
        }
        let text = read(&file);
        let code = text.split("#[cfg(test)]\nmod ").next().unwrap_or("");
        let imports = graph.entry(module.clone()).or_default();
        for line in code.lines().map(code_of) {
            for name in crate_paths(line) {
                if name != module {
                    imports.insert(name);
                }
            }
        }
    }
    graph
}

/// The first segment after each `crate::` on a line, `use crate::{a, b::c}` included.
fn crate_paths(line: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        let rest = &line[at + "crate::".len()..];
        let rest = rest.strip_prefix('{').map_or(rest, |group| {
            for item in group.split([',', '}']) {
                let first = item.trim().split("::").next().unwrap_or("");
                if first.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !first.is_empty()
                {
                    names.push(first.to_owned());
                }
            }
            ""
        });
        let first: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !first.is_empty() {
            names.push(first);
        }
    }
    names
}

#[test]
fn no_import_cycle_among_the_daemon_modules() {
    let graph = daemon_imports();
    let reach = |from: &str| -> BTreeMap<String, String> {
        // Each module reached from `from`, with the module it was reached through.
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut stack = vec![from.to_owned()];
        while let Some(at) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if !seen.contains_key(next) {
                    seen.insert(next.clone(), at.clone());
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let mut cycles = BTreeSet::new();
    for module in graph.keys() {
        let seen = reach(module);
        if seen.contains_key(module) {
            let mut cycle = vec![module.clone()];
            let mut at = seen[module].clone();
            while at != *module && cycle.len() <= graph.len() {
                cycle.push(at.clone());
                at = seen[&at].clone();
            }
            cycle.reverse();
            let members: BTreeSet<String> = cycle.iter().cloned().collect();
            if cycles.insert(members) {
                eprintln!(
                    "cycle: {module} → {} → {module}",
                    cycle[..cycle.len() - 1].join(" → ")
                );
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "rule: the modules of crates/celistra-daemon/src form no `use crate::…` cycle (shared \
         state lives in services.rs, agents are reached through AgentDirectory); cycles among: \
         {cycles:?}"
    );
}

/// Every API route is in the route table with a role: each handler annotated with
/// `#[utoipa::path]` in `api/` is registered by `route!(<access>, module::handler)` in
/// `api/routes.rs`, and no route is registered anywhere else in `api/` (a `.route(` call outside
/// the table's loop would bypass the role check). The sweep in `roles.rs` then checks that the
/// router answers each role as the table says.
#[test]
fn every_api_route_is_in_the_route_table_with_a_role() {
    let api = root().join("crates/celistra-daemon/src/api");
    let table = read(&api.join("routes.rs"));
    let mut handlers = BTreeSet::new();
    let mut outside = vec![];
    let mut sources = vec![];
    rust_files(&api, &mut sources);
    for path in sources {
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = read(&path);
        let mut annotated = false;
        for line in text.lines().map(code_of) {
            if line.trim_start().starts_with("#[utoipa::path") {
                annotated = true;
            }
            if annotated && let Some(rest) = line.split("async fn ").nth(1) {
                let name = rest.split(['(', '<']).next().unwrap().trim().to_owned();
                let module = if module == "mod" {
                    "super".to_owned()
                } else {
                    module.clone()
                };
                handlers.insert(format!("{module}::{name}"));
                annotated = false;
            }
            if module != "routes" && module != "mod" && line.contains(".route(") {
                outside.push(format!("{}: {}", relative(&path), line.trim()));
            }
        }
    }
    assert!(handlers.len() >= 50, "found only {handlers:?}");
    let accesses = ["Any", "Public", "owner", "operator", "viewer", "approver"];
    let mut missing = vec![];
    for handler in &handlers {
        let registered = accesses.iter().any(|access| {
            table.contains(&format!("route!({access}, {handler})"))
                || table.contains(&format!("route!({access}, {handler}, via_hub)"))
        });
        if !registered {
            missing.push(handler.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "rule: every handler with #[utoipa::path] is a route of the table in api/routes.rs with \
         its role, `route!(<owner|operator|viewer|approver|Any|Public>, module::handler)`; not \
         registered: {missing:?}"
    );
    assert!(
        outside.is_empty(),
        "rule: routes are registered only from the table (api/routes.rs), so each has a role; \
         found: {outside:?}"
    );
}

/// A fleet node dials its hub and serves on that connection; it never listens for the hub, so a
/// node behind NAT needs no open port and a hub cannot reach a node that did not dial it.
#[test]
fn the_node_side_of_the_link_never_listens() {
    let member = root().join("crates/celistra-daemon/src/fleet/member.rs");
    let found: Vec<String> = read(&member)
        .lines()
        .map(code_of)
        .filter(|code| {
            ["TcpListener", "UnixListener", ".bind(", ".accept("]
                .iter()
                .any(|t| code.contains(t))
        })
        .map(|code| code.trim().to_owned())
        .collect();
    assert!(
        found.is_empty(),
        "rule: fleet/member.rs (the node's side of the link) never listens or accepts; found:\n  {}",
        found.join("\n  ")
    );
}

/// The hub's user is named to a node in two headers; only the authentication of requests that
/// came over the node's own link (`authenticate_hub_user`) may read them, and only the hub's
/// forwarding sets them.
#[test]
fn fleet_identity_headers_are_read_only_on_the_link() {
    let allowed = [
        "crates/celistra-daemon/src/api/mod.rs",
        "crates/celistra-daemon/src/api/fleet.rs",
        "crates/celistra-daemon/src/fleet/hub.rs",
        "crates/celistra-proto/src/fleet.rs",
    ];
    let mut found = Vec::new();
    for (_, dir) in crates() {
        for file in scanned_sources(&dir) {
            let name = relative(&file);
            if allowed.contains(&name.as_str()) || name.contains("/tests/") {
                continue;
            }
            let text = read(&file);
            for token in [
                "FLEET_USER_HEADER",
                "FLEET_ROLE_HEADER",
                "celistra-fleet-user",
                "celistra-fleet-role",
            ] {
                if text.lines().map(code_of).any(|code| code.contains(token)) {
                    found.push(format!("{name}: {token}"));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "rule: the fleet identity headers are set by the hub's forwarding and read only by \
         authenticate_hub_user; found elsewhere:\n  {}",
        found.join("\n  ")
    );
    let mod_rs = read(&root().join("crates/celistra-daemon/src/api/mod.rs"));
    let readers = mod_rs.matches("FLEET_USER_HEADER").count();
    assert_eq!(
        readers, 1,
        "api/mod.rs reads the user header in authenticate_hub_user only"
    );
}

/// Screen phrases are data (`rules.json`, `agent-rules.json`): the daemon matches none itself, so
/// a CLI that rewords its prompts never needs a new daemon.
#[test]
fn the_daemon_matches_no_screen_phrase_itself() {
    let manifest = read(&root().join("crates/celistra-daemon/Cargo.toml"));
    let mut found: Vec<String> = dependencies(&manifest)
        .into_values()
        .flatten()
        .filter(|dep| dep == "regex")
        .map(|dep| format!("crates/celistra-daemon/Cargo.toml: {dep}"))
        .collect();
    let activity = root().join("crates/celistra-daemon/src/supervisor/activity.rs");
    for (n, line) in read(&activity).lines().enumerate() {
        let code = code_of(line);
        if [
            ".contains(\"",
            ".starts_with(\"",
            ".ends_with(\"",
            ".find(\"",
        ]
        .iter()
        .any(|t| code.contains(t))
        {
            found.push(format!(
                "{}:{}: {}",
                relative(&activity),
                n + 1,
                code.trim()
            ));
        }
    }
    assert!(
        found.is_empty(),
        "rule: screen phrases live in the rules files, not in the daemon; found:\n  {}",
        found.join("\n  ")
    );
}
