//! supervisord's INI files: `[program:x]` sections (with `numprocs` and supervisord's `%(…)s`
//! expansion), `[group:x]`, and the `[include]` patterns the caller resolves, into agent specs.

use std::collections::BTreeMap;

use celistra_proto::{AgentSpec, Dependency, DependencyCondition, Signal};

use super::{Import, ImportError, KEEPS_HISTORY, Note, NoteKind, Place};

/// One parsed file.
#[derive(Debug, Clone)]
pub struct IniFile {
    /// As the user named it, for notes and errors.
    pub name: String,
    /// Its directory: `%(here)s`, and where relative include patterns start.
    pub here: String,
    sections: Vec<Section>,
}

#[derive(Debug, Clone)]
struct Section {
    name: String,
    line: usize,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    value: String,
    line: usize,
}

/// What the running machine contributes to expansion: `%(ENV_X)s` and `%(host_node_name)s`.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub env: BTreeMap<String, String>,
    pub host_name: String,
}

/// Parses one file as supervisord's ConfigParser does: `key = value` or `key: value`, comments on
/// their own line (`;`, `#`) or after whitespace, and indented lines continuing a value.
pub fn parse(name: &str, here: &str, text: &str) -> Result<IniFile, ImportError> {
    let error = |line: usize, message: String| ImportError {
        file: name.to_owned(),
        line: Some(line),
        message,
    };
    let mut sections: Vec<Section> = vec![];
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        let continues = raw.starts_with([' ', '\t']);
        if continues && let Some(entry) = sections.last_mut().and_then(|s| s.entries.last_mut()) {
            entry.value.push('\n');
            entry.value.push_str(strip_inline_comment(trimmed));
            continue;
        }
        if let Some(header) = trimmed.strip_prefix('[') {
            let Some(section) = header.strip_suffix(']') else {
                return Err(error(
                    line,
                    format!("`{trimmed}` is not a section header; write [name]"),
                ));
            };
            let section = section.trim();
            if let Some(first) = sections.iter().find(|s| s.name == section) {
                return Err(error(
                    line,
                    format!(
                        "section [{section}] is defined twice (first on line {}); merge them",
                        first.line
                    ),
                ));
            }
            sections.push(Section {
                name: section.to_owned(),
                line,
                entries: vec![],
            });
            continue;
        }
        let Some(split) = trimmed.find(['=', ':']) else {
            return Err(error(line, format!("`{trimmed}` is not `key = value`")));
        };
        let Some(section) = sections.last_mut() else {
            return Err(error(line, "a key before any [section]".into()));
        };
        let key = trimmed[..split].trim().to_ascii_lowercase();
        if section.entries.iter().any(|e| e.key == key) {
            return Err(error(
                line,
                format!("[{}] sets `{key}` twice", section.name),
            ));
        }
        section.entries.push(Entry {
            key,
            value: strip_inline_comment(trimmed[split + 1..].trim()).to_owned(),
            line,
        });
    }
    Ok(IniFile {
        name: name.to_owned(),
        here: here.to_owned(),
        sections,
    })
}

/// Cuts a `;` or `#` comment that follows whitespace.
fn strip_inline_comment(value: &str) -> &str {
    let bytes = value.as_bytes();
    for (at, &b) in bytes.iter().enumerate() {
        if (b == b';' || b == b'#') && at > 0 && bytes[at - 1].is_ascii_whitespace() {
            return value[..at].trim_end();
        }
    }
    value
}

/// The include patterns of the main file's `[include] files =` (whitespace-separated globs,
/// expanded, relative to the file's directory), with the line they are on.
pub fn includes(main: &IniFile, context: &Context) -> Result<Vec<(String, usize)>, ImportError> {
    let Some(section) = main.sections.iter().find(|s| s.name == "include") else {
        return Ok(vec![]);
    };
    let mut patterns = vec![];
    for entry in &section.entries {
        let place = Place {
            file: &main.name,
            line: Some(entry.line),
            within: "[include]",
            key: &entry.key,
        };
        if entry.key != "files" {
            return Err(place.error("unknown key; [include] takes only `files`"));
        }
        let vars = |name: &str| base_var(name, &main.here, context);
        let expanded = expand(&entry.value, &vars).map_err(|e| place.error(e))?;
        patterns.extend(
            expanded
                .split_whitespace()
                .map(|p| (p.to_owned(), entry.line)),
        );
    }
    Ok(patterns)
}

/// A value `%(…)` can take.
#[derive(Debug, Clone)]
enum Var {
    Text(String),
    Number(i64),
}

/// The variables every section knows: `here`, `host_node_name` and `ENV_*`.
fn base_var(name: &str, here: &str, context: &Context) -> Option<Var> {
    match name {
        "here" => Some(Var::Text(here.to_owned())),
        "host_node_name" => Some(Var::Text(context.host_name.clone())),
        _ => name
            .strip_prefix("ENV_")
            .and_then(|env| context.env.get(env))
            .map(|v| Var::Text(v.clone())),
    }
}

/// Python's `%` formatting as supervisord applies it: `%(name)s`, `%(name)02d` (flags `-`, `0`,
/// a width), `%%`.
fn expand(text: &str, vars: &dyn Fn(&str) -> Option<Var>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('%') {
            out.push('%');
            rest = after;
            continue;
        }
        let bad = || {
            format!(
                "`%{}` is not a %(name)s expansion; write %% for a percent sign",
                rest.chars().take(12).collect::<String>()
            )
        };
        let inner = rest.strip_prefix('(').ok_or_else(bad)?;
        let close = inner.find(')').ok_or_else(bad)?;
        let name = &inner[..close];
        let spec = &inner[close + 1..];
        let conversion_at = spec
            .find(|c: char| c.is_ascii_alphabetic())
            .ok_or_else(bad)?;
        let (flags_width, conversion) = (
            &spec[..conversion_at],
            &spec[conversion_at..conversion_at + 1],
        );
        rest = &spec[conversion_at + 1..];
        let left = flags_width.contains('-');
        let zero = flags_width.trim_start_matches('-').starts_with('0');
        let width: usize = flags_width
            .trim_start_matches(['-', '0'])
            .parse()
            .unwrap_or(0);
        let value = vars(name).ok_or_else(|| match name.strip_prefix("ENV_") {
            Some(variable) => format!(
                "%({name})s: the environment variable {variable} is not set; set it and import \
                 again"
            ),
            None => format!(
                "%({name})s is not a variable here; supervisord knows ENV_*, program_name, \
                 process_num, group_name, numprocs, numprocs_start, here and host_node_name"
            ),
        })?;
        let text = match (conversion, value) {
            ("s" | "r", Var::Text(t)) => t,
            ("s" | "r" | "d" | "i" | "u", Var::Number(n)) => n.to_string(),
            ("d" | "i" | "u", Var::Text(t)) => t
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("%({name}){conversion} wants a number, and {name} is `{t}`"))?
                .to_string(),
            (other, _) => {
                return Err(format!(
                    "%({name}){other}: only the s and d conversions are supported"
                ));
            }
        };
        let padding = width.saturating_sub(text.chars().count());
        if left {
            out.push_str(&text);
            out.push_str(&" ".repeat(padding));
        } else if zero && conversion != "s" {
            let (sign, digits) = text
                .strip_prefix('-')
                .map_or(("", text.as_str()), |d| ("-", d));
            out.push_str(sign);
            out.push_str(&"0".repeat(padding));
            out.push_str(digits);
        } else {
            out.push_str(&" ".repeat(padding));
            out.push_str(&text);
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Converts the main file and its included files (in that order) into specs and notes.
pub fn convert(files: &[IniFile], context: &Context) -> Result<Import, ImportError> {
    let mut import = Import::default();
    let mut priority_keys = vec![];
    let groups = groups(files, &mut import.notes, &mut priority_keys)?;
    let mut ordered: Vec<(i64, AgentSpec)> = vec![];
    // Which section made each name, to refuse two agents of one name (a process_name that
    // collides with another program's).
    let mut made_by: BTreeMap<String, String> = BTreeMap::new();
    for (index, file) in files.iter().enumerate() {
        for section in &file.sections {
            let place = Place {
                file: &file.name,
                line: Some(section.line),
                within: &format!("[{}]", section.name),
                key: "",
            };
            let (kind, _) = section
                .name
                .split_once(':')
                .unwrap_or((section.name.as_str(), ""));
            match kind {
                "program" => {
                    let group = groups.get(program_name(section)).map(String::as_str);
                    let (priority, specs) = program(
                        file,
                        section,
                        group,
                        context,
                        &mut import.notes,
                        &mut priority_keys,
                    )?;
                    for spec in &specs {
                        if let Some(other) = made_by.insert(spec.name.clone(), section.name.clone())
                        {
                            return Err(place.error(format!(
                                "makes an agent named `{}`, as [{other}] does; change a \
                                 process_name",
                                spec.name
                            )));
                        }
                    }
                    ordered.extend(specs.into_iter().map(|spec| (priority, spec)));
                }
                "group" => {}
                "include" if index == 0 => import.notes.push(place.note(
                    NoteKind::Mapped,
                    format!("read {} included file(s)", files.len() - 1),
                )),
                "include" => import.notes.push(place.note(
                    NoteKind::Unsupported,
                    "supervisord reads [include] from its main file only; list these files there",
                )),
                _ => import
                    .notes
                    .push(place.note(NoteKind::Unsupported, section_advice(kind))),
            }
        }
    }
    // supervisord starts lower priorities first: the file lists agents in that order.
    ordered.sort_by_key(|(priority, _)| *priority);
    let priorities: Vec<i64> = ordered.iter().map(|(priority, _)| *priority).collect();
    import.agents = ordered.into_iter().map(|(_, spec)| spec).collect();
    if !priority_keys.is_empty() {
        start_order(&mut import.agents, &priorities);
        let noted = priority_keys.into_iter().map(|key| Note {
            kind: NoteKind::Mapped,
            message: "start order: the agent depends on (condition `started`) the programs of \
                the next lower priority that start by themselves; they stop in reverse order"
                .into(),
            ..key
        });
        import.notes.extend(noted);
    }
    // The notes read as the files do: file by file, line by line.
    let file_index = |note: &Note| files.iter().position(|f| f.name == note.file);
    import
        .notes
        .sort_by_key(|note| (file_index(note), note.line));
    Ok(import)
}

/// What to do instead of a section Celistra has no counterpart for.
fn section_advice(kind: &str) -> String {
    match kind {
        "supervisord" | "supervisorctl" | "unix_http_server" | "inet_http_server" => format!(
            "supervisord's own [{kind}] settings have no counterpart in an agent: the daemon's \
             are its flags (`--listen`, `--tls`) and config.json; ctl reaches it through its \
             Unix socket or a context"
        ),
        "rpcinterface" => "Celistra's API is HTTP with OpenAPI (/v1/openapi.json), with tokens \
             per role; XML-RPC interfaces do not apply"
            .into(),
        "eventlistener" => "Celistra has no event listeners: follow events with `ctl events -f \
             --json`, or have them delivered by the notifications of config.json (webhooks, ntfy)"
            .into(),
        "fcgi-program" => "Celistra does not bind FastCGI sockets for programs: run the program \
             with its own listener as a [program]"
            .into(),
        _ => "not a supervisord section Celistra knows".into(),
    }
}

fn program_name(section: &Section) -> &str {
    section
        .name
        .split_once(':')
        .map_or("", |(_, name)| name.trim())
}

/// Which group each program is in (`[group:x] programs=a,b`); notes on the groups themselves.
/// `priority_keys` gathers the `priority` keys, whose notes are written once the start order is
/// known to be mapped or not.
fn groups(
    files: &[IniFile],
    notes: &mut Vec<Note>,
    priority_keys: &mut Vec<Note>,
) -> Result<BTreeMap<String, String>, ImportError> {
    let mut member_of = BTreeMap::new();
    for file in files {
        for section in files_sections(file, "group") {
            let group = program_name(section);
            let within = format!("[{}]", section.name);
            for entry in &section.entries {
                let place = Place {
                    file: &file.name,
                    line: Some(entry.line),
                    within: &within,
                    key: &entry.key,
                };
                match entry.key.as_str() {
                    "programs" => {
                        let programs: Vec<&str> = entry
                            .value
                            .split(',')
                            .map(str::trim)
                            .filter(|p| !p.is_empty())
                            .collect();
                        for program in &programs {
                            if let Some(other) =
                                member_of.insert((*program).to_owned(), group.to_owned())
                            {
                                return Err(place.error(format!(
                                    "program {program} is also in \
                                    group {other}; a program is in one group"
                                )));
                            }
                        }
                        notes.push(place.note(
                            NoteKind::Mapped,
                            format!(
                                "Celistra has no groups: the agents keep their own names; act on \
                                    them together with `ctl stop {}` (and start, restart)",
                                programs.join(" ")
                            ),
                        ));
                    }
                    "priority" => {
                        number(&entry.value).map_err(|e| place.error(e))?;
                        priority_keys.push(place.note(NoteKind::Unsupported, String::new()));
                    }
                    _ => notes.push(place.note(NoteKind::Unsupported, "not a [group] key")),
                }
            }
        }
    }
    Ok(member_of)
}

fn files_sections<'a>(file: &'a IniFile, kind: &'a str) -> impl Iterator<Item = &'a Section> {
    file.sections
        .iter()
        .filter(move |s| s.name.split_once(':').is_some_and(|(k, _)| k == kind))
}

fn number(text: &str) -> Result<i64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number"))
}

fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("`{text}` is not true or false")),
    }
}

/// One `[program:x]`: as many specs as `numprocs`, and its priority (default 999).
fn program<'a>(
    file: &IniFile,
    section: &'a Section,
    group: Option<&str>,
    context: &Context,
    notes: &mut Vec<Note>,
    priority_keys: &mut Vec<Note>,
) -> Result<(i64, Vec<AgentSpec>), ImportError> {
    let name = program_name(section);
    let within = format!("[{}]", section.name);
    let place_of = |entry: &'a Entry| Place {
        file: &file.name,
        line: Some(entry.line),
        within: &within,
        key: &entry.key,
    };
    let section_place = Place {
        file: &file.name,
        line: Some(section.line),
        within: &within,
        key: "",
    };
    let get = |key: &str| section.entries.iter().find(|e| e.key == key);
    let count_of = |key: &str, default: i64| -> Result<i64, ImportError> {
        get(key).map_or(Ok(default), |e| {
            number(&e.value).map_err(|m| place_of(e).error(m))
        })
    };
    let numprocs = count_of("numprocs", 1)?;
    let numprocs_start = count_of("numprocs_start", 0)?;
    if !(1..=1000).contains(&numprocs) {
        return Err(section_place.error(format!("numprocs {numprocs}: use 1 to 1000")));
    }
    let process_name = get("process_name").map_or("%(program_name)s", |e| e.value.as_str());
    if numprocs > 1 && !process_name.contains("%(process_num)") {
        return Err(section_place.error(
            "numprocs > 1 needs a process_name with %(process_num)s (e.g. \
                %(program_name)s-%(process_num)02d), so that each copy has its own name",
        ));
    }
    let priority = count_of("priority", 999)?;
    let mut specs = vec![];
    for process_num in numprocs_start..numprocs_start + numprocs {
        let vars = |var: &str| match var {
            "program_name" => Some(Var::Text(name.to_owned())),
            "group_name" => Some(Var::Text(group.unwrap_or(name).to_owned())),
            "process_num" => Some(Var::Number(process_num)),
            "numprocs" => Some(Var::Number(numprocs)),
            "numprocs_start" => Some(Var::Number(numprocs_start)),
            _ => base_var(var, &file.here, context),
        };
        let expanded =
            |entry: &'a Entry| expand(&entry.value, &vars).map_err(|m| place_of(entry).error(m));
        let mut spec = AgentSpec {
            name: expand(process_name, &vars)
                .map_err(|m| section_place.error(format!("process_name: {m}")))?,
            // supervisord gives programs pipes, not a terminal.
            no_pty: true,
            // supervisord's default `autorestart=unexpected` with `exitcodes=0`.
            auto_restart: true,
            expected_exit_codes: vec![0],
            ..AgentSpec::default()
        };
        let first = process_num == numprocs_start;
        // Notes are given once per program, not once per copy.
        let mut note = |note: Note| {
            if first {
                notes.push(note);
            }
        };
        let mut autorestart = "unexpected".to_owned();
        let mut exitcodes = vec![0];
        let mut umask = None;
        for entry in &section.entries {
            let place = place_of(entry);
            let fail = |m: String| place.error(m);
            match entry.key.as_str() {
                "command" => spec.command = expanded(entry)?,
                "process_name" | "numprocs" | "numprocs_start" => {}
                "directory" => spec.workspace = Some(expanded(entry)?),
                "environment" => spec.env = environment(&expanded(entry)?).map_err(fail)?,
                "user" => spec.user = Some(expanded(entry)?),
                "autostart" => spec.no_autostart = !boolean(&entry.value).map_err(fail)?,
                "autorestart" => autorestart = entry.value.trim().to_ascii_lowercase(),
                "exitcodes" => {
                    exitcodes = entry
                        .value
                        .split(',')
                        .map(|c| {
                            c.trim()
                                .parse::<i32>()
                                .map_err(|_| format!("`{c}` is not an exit code"))
                        })
                        .collect::<Result<_, _>>()
                        .map_err(fail)?;
                }
                "startsecs" => {
                    let secs = u64::try_from(number(&entry.value).map_err(fail)?)
                        .map_err(|_| fail("startsecs is negative".into()))?;
                    spec.start_secs = Some(secs).filter(|secs| *secs > 0);
                }
                "startretries" => {
                    let retries = u32::try_from(number(&entry.value).map_err(fail)?)
                        .map_err(|_| fail("startretries is negative".into()))?;
                    spec.restart_max = Some(retries.min(10_000));
                    note(place.note(
                        NoteKind::Mapped,
                        format!(
                            "restart_max {}: supervisord counts failed starts in a row, \
                            Celistra every restart in a rolling window (restart_window_secs, 60 s \
                            by default), with backoff; then the agent is crashed-out until started",
                            retries.min(10_000)
                        ),
                    ));
                }
                "stopsignal" => {
                    let signal = entry.value.trim().to_ascii_uppercase();
                    match signal.trim_start_matches("SIG").parse::<Signal>() {
                        Ok(signal) => spec.stop_signal = Some(signal),
                        Err(_) => note(place.note(
                            NoteKind::Unsupported,
                            format!(
                                "stop signal {signal}: Celistra stops with TERM, HUP, INT, \
                                QUIT or KILL; the agent gets TERM"
                            ),
                        )),
                    }
                }
                "stopwaitsecs" => {
                    let secs = u64::try_from(number(&entry.value).map_err(fail)?)
                        .map_err(|_| fail("stopwaitsecs is negative".into()))?;
                    spec.stop_timeout_ms = Some(secs.saturating_mul(1000));
                }
                "stopasgroup" | "killasgroup" => note(place.note(
                    NoteKind::Mapped,
                    "Celistra always signals the agent's whole process group (and, with cgroups, \
                        every descendant): nothing to set",
                )),
                "redirect_stderr" => note(place.note(
                    NoteKind::Mapped,
                    "Celistra keeps stdout and stderr in one history, each line tagged with its \
                        stream: `ctl logs NAME` shows both, `--stdout`/`--stderr` one",
                )),
                "umask" => umask = Some(entry.value.trim().to_owned()),
                "priority" => {
                    if first {
                        priority_keys.push(place.note(NoteKind::Unsupported, String::new()));
                    }
                }
                key if is_log_key(key) => note(place.note(NoteKind::Unsupported, KEEPS_HISTORY)),
                "serverurl" => note(place.note(
                    NoteKind::Unsupported,
                    "an agent reaches its daemon through its own socket (`celistrad ask`, \
                        `celistrad hook`); there is no URL to set",
                )),
                _ => note(place.note(NoteKind::Unsupported, "not a [program] key Celistra knows")),
            }
        }
        if spec.command.is_empty() {
            return Err(section_place.error("has no command; every program needs one"));
        }
        if let Some(mask) = &umask {
            if !mask.bytes().all(|b| (b'0'..=b'7').contains(&b)) || mask.is_empty() {
                let entry = get("umask").expect("umask was read from an entry");
                return Err(place_of(entry).error(format!("`{mask}` is not an octal umask")));
            }
            spec.command = format!("umask {mask} && exec {}", spec.command);
            if first {
                let entry = get("umask").expect("umask was read from an entry");
                notes.push(place_of(entry).note(
                    NoteKind::Mapped,
                    format!("set by the command line: `umask {mask} && exec …`"),
                ));
            }
        }
        match autorestart.as_str() {
            "unexpected" => spec.expected_exit_codes = exitcodes.clone(),
            "true" => {
                spec.expected_exit_codes = vec![];
            }
            "false" => {
                spec.auto_restart = false;
                spec.expected_exit_codes = vec![];
            }
            other => {
                let entry =
                    get("autorestart").expect("a non-default autorestart was read from an entry");
                return Err(
                    place_of(entry).error(format!("`{other}` is not true, false or unexpected"))
                );
            }
        }
        if autorestart != "unexpected"
            && first
            && let Some(entry) = get("exitcodes")
        {
            notes.push(place_of(entry).note(
                NoteKind::Mapped,
                format!(
                    "only used with autorestart=unexpected; with autorestart={autorestart} \
                    supervisord ignores it, and so does the import"
                ),
            ));
        }
        // Checked as `apply` will, so that a bad name or value is refused here, with its place.
        crate::spec::validate(&spec, true)
            .map_err(|m| section_place.error(format!("agent `{}`: {m}", spec.name)))?;
        specs.push(spec);
    }
    Ok((priority, specs))
}

/// `stdout_logfile`, `stderr_logfile_maxbytes`, `stdout_syslog`, … and `logfile`.
fn is_log_key(key: &str) -> bool {
    let stream_key = key
        .strip_prefix("stdout_")
        .or_else(|| key.strip_prefix("stderr_"));
    matches!(
        stream_key,
        Some(
            "logfile"
                | "logfile_maxbytes"
                | "logfile_backups"
                | "capture_maxbytes"
                | "events_enabled"
                | "syslog"
        )
    )
}

/// supervisord's `environment`: `KEY="val,with,commas",K2=v`: pairs split at commas outside
/// quotes; a value in matching quotes loses them.
fn environment(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut pairs = vec![];
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (None, ',') => pairs.push(std::mem::take(&mut current)),
            (None, '"' | '\'') => {
                quote = Some(c);
                current.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                current.push(c);
            }
            (_, '\n') if quote.is_none() => current.push(' '),
            _ => current.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("a quote is not closed in `{text}`"));
    }
    pairs.push(current);
    let mut env = BTreeMap::new();
    for pair in pairs.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not KEY=value"))?;
        let value = value.trim();
        let unquoted = match value.chars().next() {
            Some(q @ ('"' | '\'')) if value.len() >= 2 && value.ends_with(q) => {
                &value[1..value.len() - 1]
            }
            _ => value,
        };
        env.insert(key.trim().to_owned(), unquoted.to_owned());
    }
    Ok(env)
}

/// supervisord's `priority` as dependencies: `agents`, sorted by `priorities` (lowest first, one
/// per agent), each wait (condition `started`) for the agents of the next lower priority that
/// start by themselves (one created stopped would hold them back for ever).
fn start_order(agents: &mut [AgentSpec], priorities: &[i64]) {
    for index in 0..agents.len() {
        let own = priorities[index];
        let Some(&below) = priorities[..index].iter().rfind(|p| **p < own) else {
            continue;
        };
        let depends_on: Vec<Dependency> = (0..index)
            .filter(|&i| priorities[i] == below && !agents[i].no_autostart)
            .map(|i| Dependency {
                agent: agents[i].name.clone(),
                condition: DependencyCondition::Started,
            })
            .collect();
        agents[index].depends_on = depends_on;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Context {
        Context {
            env: BTreeMap::from([
                ("HOME".into(), "/home/me".into()),
                ("PORT".into(), "8000".into()),
            ]),
            host_name: "box".into(),
        }
    }

    fn import(text: &str) -> Import {
        let file = parse("conf.d/app.conf", "/etc/supervisor/conf.d", text).unwrap();
        convert(&[file], &context()).unwrap()
    }

    fn import_error(text: &str) -> String {
        let file = match parse("app.conf", "/etc", text) {
            Ok(file) => file,
            Err(e) => return e.to_string(),
        };
        convert(&[file], &context()).unwrap_err().to_string()
    }

    fn notes_of<'a>(import: &'a Import, key: &str) -> Vec<&'a Note> {
        import.notes.iter().filter(|n| n.key == key).collect()
    }

    #[test]
    fn the_seed_program_maps_with_its_log_file_reported() {
        let got = import(
            "[program:scraper]
command=python3 /home/me/scraper/run.py
autorestart=true
user=me
stdout_logfile=/var/log/scraper.log
",
        );
        let spec = &got.agents[0];
        assert_eq!(
            (
                spec.name.as_str(),
                spec.command.as_str(),
                spec.user.as_deref()
            ),
            ("scraper", "python3 /home/me/scraper/run.py", Some("me"))
        );
        assert!(spec.auto_restart && spec.expected_exit_codes.is_empty() && spec.no_pty);
        let log = notes_of(&got, "stdout_logfile");
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].kind, log[0].line), (NoteKind::Unsupported, Some(5)));
        assert!(
            log[0].to_string().starts_with(
                "conf.d/app.conf:5: [program:scraper] stdout_logfile: not imported: Celistra keeps"
            ),
            "{}",
            log[0]
        );
    }

    #[test]
    fn autorestart_maps_true_false_and_unexpected_with_exitcodes() {
        let spec =
            |body: &str| import(&format!("[program:p]\ncommand=run\n{body}")).agents[0].clone();
        let default = spec("");
        assert!(default.auto_restart);
        assert_eq!(default.expected_exit_codes, [0]);
        let unexpected = spec("autorestart=unexpected\nexitcodes=0,2\n");
        assert_eq!(
            (unexpected.auto_restart, unexpected.expected_exit_codes),
            (true, vec![0, 2])
        );
        let never = spec("autorestart=false\n");
        assert!(!never.auto_restart && never.expected_exit_codes.is_empty());
        let got = import("[program:p]\ncommand=run\nautorestart=true\nexitcodes=3\n");
        assert_eq!(notes_of(&got, "exitcodes")[0].kind, NoteKind::Mapped);
        assert!(
            import_error("[program:p]\ncommand=run\nautorestart=maybe\n").contains(
                "app.conf:3: [program:p] autorestart: `maybe` is not true, false or unexpected"
            )
        );
    }

    #[test]
    fn numprocs_expands_names_and_commands_with_printf_widths() {
        let got = import(
            "[program:worker]
command=work --port=%(ENV_PORT)s --n=%(process_num)d --id=%(process_num)03d --g=%(group_name)s --left=[%(process_num)-3d]
process_name=%(program_name)s-%(process_num)02d
numprocs=3
numprocs_start=9
",
        );
        let names: Vec<&str> = got.agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["worker-09", "worker-10", "worker-11"]);
        assert_eq!(
            got.agents[1].command,
            "work --port=8000 --n=10 --id=010 --g=worker --left=[10 ]"
        );
        assert!(
            import_error("[program:w]\ncommand=x\nnumprocs=2\n")
                .contains("needs a process_name with %(process_num)s")
        );
    }

    #[test]
    fn here_host_and_unknown_variables() {
        let got = import(
            "[program:p]
command=%(here)s/run --on %(host_node_name)s 100%%
directory=%(ENV_HOME)s
",
        );
        assert_eq!(
            got.agents[0].command,
            "/etc/supervisor/conf.d/run --on box 100%"
        );
        assert_eq!(got.agents[0].workspace.as_deref(), Some("/home/me"));
        let err = import_error("[program:p]\ncommand=%(ENV_NOPE)s\n");
        assert!(
            err.contains(
                "app.conf:2: [program:p] command: %(ENV_NOPE)s: the environment variable NOPE is not set"
            ),
            "{err}"
        );
        assert!(import_error("[program:p]\ncommand=%(nope)s\n").contains("not a variable here"));
    }

    #[test]
    fn environment_follows_supervisords_quoting() {
        let got = import(
            "[program:p]
command=x
environment=A=\"1,2,3\",B=plain, C='it is',
  D=\"%(program_name)s\"
",
        );
        let env = &got.agents[0].env;
        assert_eq!(env["A"], "1,2,3");
        assert_eq!(env["B"], "plain");
        assert_eq!(env["C"], "it is");
        assert_eq!(env["D"], "p");
        assert!(
            import_error("[program:p]\ncommand=x\nenvironment=A=\"open\n").contains("not closed")
        );
    }

    #[test]
    fn stop_settings_autostart_umask_and_retries() {
        let got = import(
            "[program:p]
command=srv -x ; a comment
stopsignal=QUIT
stopwaitsecs=30
autostart=false
startretries=7
umask=022
killasgroup=true
stopasgroup=true
redirect_stderr=true
",
        );
        let spec = &got.agents[0];
        assert_eq!(spec.command, "umask 022 && exec srv -x");
        assert_eq!(
            (
                spec.stop_signal,
                spec.stop_timeout_ms,
                spec.no_autostart,
                spec.restart_max
            ),
            (Some(Signal::Quit), Some(30_000), true, Some(7))
        );
        for key in [
            "killasgroup",
            "stopasgroup",
            "redirect_stderr",
            "startretries",
            "umask",
        ] {
            assert_eq!(notes_of(&got, key)[0].kind, NoteKind::Mapped, "{key}");
        }
        let usr = import("[program:p]\ncommand=x\nstopsignal=USR1\n");
        assert_eq!(usr.agents[0].stop_signal, None);
        assert_eq!(notes_of(&usr, "stopsignal")[0].kind, NoteKind::Unsupported);
    }

    #[test]
    fn startsecs_is_the_start_window_and_priorities_become_dependencies() {
        let got = import(
            "[program:db]\ncommand=db\npriority=1\nstartsecs=5\n\
             [program:cache]\ncommand=cache\npriority=1\nstartsecs=0\n\
             [program:manual]\ncommand=m\npriority=1\nautostart=false\n\
             [program:web]\ncommand=web\npriority=10\n\
             [program:worker]\ncommand=worker\npriority=20\n",
        );
        let by_name = |name: &str| got.agents.iter().find(|a| a.name == name).unwrap();
        assert_eq!(by_name("db").start_secs, Some(5));
        assert_eq!(by_name("cache").start_secs, None);
        let depends = |name: &str| -> Vec<(String, DependencyCondition)> {
            by_name(name)
                .depends_on
                .iter()
                .map(|d| (d.agent.clone(), d.condition))
                .collect()
        };
        let started = DependencyCondition::Started;
        // The next lower priority only, and not an agent that waits for an operator.
        assert_eq!(
            depends("web"),
            [("db".to_owned(), started), ("cache".to_owned(), started)]
        );
        assert_eq!(depends("worker"), [("web".to_owned(), started)]);
        assert!(depends("db").is_empty());
        let priority = notes_of(&got, "priority")[0];
        assert_eq!(priority.kind, NoteKind::Mapped);
        assert!(priority.message.contains("reverse"), "{priority}");
    }

    #[test]
    fn groups_keep_names_and_other_sections_are_reported() {
        let got = import(
            "[supervisord]
logfile=/tmp/s.log
[unix_http_server]
file=/tmp/s.sock
[rpcinterface:supervisor]
x=y
[supervisorctl]
serverurl=unix:///tmp/s.sock
[eventlistener:mem]
command=memmon
[fcgi-program:f]
command=f
[group:web]
programs=a,b
priority=5
[program:a]
command=run-a --g %(group_name)s
[program:b]
command=run-b
priority=1
bogus=1
",
        );
        let names: Vec<&str> = got.agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["b", "a"], "lower priority first");
        assert_eq!(got.agents[1].command, "run-a --g web");
        let sections: Vec<(&str, Option<usize>)> = got
            .notes
            .iter()
            .filter(|n| n.key.is_empty())
            .map(|n| (n.within.as_str(), n.line))
            .collect();
        assert_eq!(
            sections,
            [
                ("[supervisord]", Some(1)),
                ("[unix_http_server]", Some(3)),
                ("[rpcinterface:supervisor]", Some(5)),
                ("[supervisorctl]", Some(7)),
                ("[eventlistener:mem]", Some(9)),
                ("[fcgi-program:f]", Some(11))
            ]
        );
        assert!(
            got.notes
                .iter()
                .filter(|n| n.key.is_empty())
                .all(|n| n.kind == NoteKind::Unsupported)
        );
        let priorities = notes_of(&got, "priority");
        assert_eq!(priorities.len(), 2, "the group's and b's");
        assert!(priorities.iter().all(|n| n.kind == NoteKind::Mapped));
        assert_eq!(got.agents[1].depends_on[0].agent, "b");
        let programs = notes_of(&got, "programs")[0];
        assert!(programs.message.contains("ctl stop a b"), "{programs}");
        assert_eq!(notes_of(&got, "bogus")[0].line, Some(21));
    }

    #[test]
    fn includes_are_listed_from_the_main_file_and_read_in_order() {
        let main = parse(
            "supervisord.conf",
            "/etc/supervisor",
            "[include]\nfiles = conf.d/*.conf %(here)s/extra.ini\n",
        )
        .unwrap();
        assert_eq!(
            includes(&main, &context()).unwrap(),
            [
                ("conf.d/*.conf".to_owned(), 2),
                ("/etc/supervisor/extra.ini".to_owned(), 2)
            ]
        );
        let one = parse(
            "conf.d/a.conf",
            "/etc/supervisor/conf.d",
            "[program:a]\ncommand=a\n",
        )
        .unwrap();
        let nested = parse(
            "conf.d/b.conf",
            "/etc/supervisor/conf.d",
            "[include]\nfiles=x\n[program:b]\ncommand=b\n",
        )
        .unwrap();
        let got = convert(&[main, one, nested], &context()).unwrap();
        assert_eq!(got.agents.len(), 2);
        assert_eq!(got.notes[0].message, "read 2 included file(s)");
        assert_eq!(
            (got.notes[1].file.as_str(), got.notes[1].kind),
            ("conf.d/b.conf", NoteKind::Unsupported)
        );
    }

    #[test]
    fn malformed_files_are_refused_with_their_line() {
        assert!(import_error("command=x\n").contains("app.conf:1: a key before any [section]"));
        assert!(
            import_error("[program:a]\ncommand=x\n[program:a]\n")
                .contains("app.conf:3: section [program:a] is defined twice")
        );
        assert!(import_error("[program:a\n").contains("not a section header"));
        assert!(
            import_error("[program:a]\ncommand=x\n[program:b]\ncommand=y\nprocess_name=a\n")
                .contains("app.conf:3: [program:b]: makes an agent named `a`, as [program:a] does")
        );
        assert!(import_error("[program:a]\nuser=me\n").contains("has no command"));
        assert!(
            import_error("[program:a]\ncommand=x\nnumprocs=lots\n")
                .contains("app.conf:3: [program:a] numprocs: `lots` is not a whole number")
        );
    }
}
