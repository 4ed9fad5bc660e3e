//! What AI coding agents say about themselves: the kind of agent a command runs, why its run ended
//! or its turn failed, when its usage limit resets, the terminal signals and screen phrases that
//! tell what it is doing, and what its structured hooks report.
//!
//! Everything here is pure: text, bytes and JSON go in, and time comes in as arguments (`now_ms`,
//! the machine's zone as `local`). The daemon owns the clock, the PTY and the agent's socket.
//!
//! - [`guess_kind`]: `claude`, `codex`, `gemini`, `aider` or `generic`, from a command line.
//! - [`classify`]: exit classes from output lines, headless JSON results and Claude Code's
//!   `StopFailure` hook.
//! - [`limit_reset`]: the reset instant of a usage-limit message, in the zone it names.
//! - [`terminal`]: BEL, OSC 9 / 777 notifications, OSC 0 / 2 titles and OSC 9;4 progress, found
//!   across chunk boundaries.
//! - [`rules`]: the screen rules file (built-in defaults plus a user's overrides) and matching.
//! - [`hooks`]: what a hook payload of each agent kind says about its activity.

pub mod classify;
pub mod hooks;
pub mod limit_reset;
pub mod rules;
pub mod terminal;

/// Longest `said` kept, in characters.
pub const MAX_SAID_CHARS: usize = 200;

/// The agent kinds with built-in knowledge; anything else is `generic`.
pub const KINDS: [&str; 5] = ["claude", "codex", "gemini", "aider", "generic"];

/// Wrappers that run the next word as the program, and their options that take a value.
const WRAPPERS: [&str; 10] = [
    "exec", "env", "command", "nohup", "npx", "bunx", "pnpx", "uvx", "pipx", "time",
];
const WRAPPER_OPTIONS_WITH_VALUE: [&str; 6] = ["-u", "--unset", "-p", "--package", "--from", "-C"];

/// The agent kind a command runs, from its first program word: the basename, after skipping
/// `VAR=value` assignments, `exec`, `env`, `nohup`, `npx`/`bunx`/`pnpx`/`uvx`/`pipx run` and their
/// options (`-y`, `--yes`, `--from PKG`, …), and an npm scope or version (`@openai/codex@latest`).
/// `python -m aider` is `aider`. Anything unrecognised is `generic`.
pub fn guess_kind(command: &str) -> &'static str {
    let mut words = command
        .split_whitespace()
        .map(|word| word.trim_matches(|c| c == '\'' || c == '"'));
    let mut after_wrapper = false;
    while let Some(word) = words.next() {
        if word.is_empty() {
            continue;
        }
        if is_assignment(word) {
            continue;
        }
        if WRAPPERS.contains(&word) || (after_wrapper && word == "run") {
            after_wrapper = true;
            continue;
        }
        if word.starts_with('-') {
            if !after_wrapper {
                return "generic";
            }
            if WRAPPER_OPTIONS_WITH_VALUE.contains(&word) {
                words.next();
            }
            continue;
        }
        let program = program_name(word);
        if program.starts_with("python") {
            // `python -m aider` / `python3 -m aider.main`
            if words.next() == Some("-m")
                && let Some(module) = words.next()
            {
                return kind_of(module.split('.').next().unwrap_or(module));
            }
            return "generic";
        }
        return kind_of(program);
    }
    "generic"
}

fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        }
        None => false,
    }
}

/// `/usr/local/bin/claude` → `claude`; `@anthropic-ai/claude-code@1.0` → `claude-code`.
fn program_name(word: &str) -> &str {
    let base = word.rsplit('/').next().unwrap_or(word);
    match base.find('@') {
        Some(0) | None => base.trim_start_matches('@'),
        Some(at) => &base[..at],
    }
}

fn kind_of(program: &str) -> &'static str {
    let program = program.to_ascii_lowercase();
    for kind in ["claude", "codex", "gemini", "aider"] {
        if program == kind
            || program.starts_with(&format!("{kind}-"))
            || program.starts_with(&format!("{kind}."))
        {
            return kind;
        }
    }
    "generic"
}

/// `text` trimmed, with control characters made spaces, and at most [`MAX_SAID_CHARS`] characters
/// (a cut one ends in `…`).
pub fn clip_said(text: &str) -> String {
    let clean: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= MAX_SAID_CHARS {
        return clean;
    }
    let mut clipped: String = clean.chars().take(MAX_SAID_CHARS - 1).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_first_program_word() {
        let cases = [
            ("claude", "claude"),
            ("claude --dangerously-skip-permissions", "claude"),
            ("/home/me/.local/bin/claude -p 'fix it'", "claude"),
            ("npx -y @anthropic-ai/claude-code", "claude"),
            (
                "npx --yes @anthropic-ai/claude-code@latest --resume",
                "claude",
            ),
            ("bunx @google/gemini-cli", "gemini"),
            ("gemini --yolo", "gemini"),
            ("npx @openai/codex exec --json 'do it'", "codex"),
            ("codex", "codex"),
            ("exec env ANTHROPIC_MODEL=opus claude", "claude"),
            ("FOO=1 BAR=two exec codex", "codex"),
            ("env -u HOME aider --model sonnet", "aider"),
            ("uvx --from aider-chat aider", "aider"),
            ("pipx run aider-chat", "aider"),
            ("python -m aider --yes", "aider"),
            ("aider", "aider"),
            ("./run-agent.sh claude", "generic"),
            ("bash -c 'claude'", "generic"),
            ("sleep 100", "generic"),
            ("", "generic"),
            ("   ", "generic"),
            ("npx -y", "generic"),
            ("claudette", "generic"),
        ];
        for (command, kind) in cases {
            assert_eq!(guess_kind(command), kind, "{command}");
        }
    }

    #[test]
    fn said_is_trimmed_clean_and_clipped() {
        assert_eq!(clip_said("  a\tb \n"), "a b");
        let long = "é".repeat(300);
        let clipped = clip_said(&long);
        assert_eq!(clipped.chars().count(), MAX_SAID_CHARS);
        assert!(clipped.ends_with('…'));
    }
}
