//! Seatbelt profiles generated from policies, compared with the golden files in `tests/golden/seatbelt`
//! (run with `UPDATE_GOLDEN=1` to rewrite them after an intended change, then review the diff), and
//! checked to be well-formed SBPL whose strings are exactly the policy's paths.

use std::path::{Path, PathBuf};

use celistra_sandbox::{MacosGrants, Network, Policy, seatbelt_profile};

/// The default capability set: `workspace_rw + read_anywhere + network + subprocess`.
fn default_set() -> Policy {
    Policy {
        workspace: "/Users/me/project".into(),
        workspace_writable: true,
        read_anywhere: true,
        network: Network::Full,
        subprocess: true,
        read: vec![],
        write: vec![],
        exec: vec![],
        hidden: vec!["/Users/me/.celistra".into()],
        macos: MacosGrants::default(),
        ask_socket: None,
    }
}

fn cases() -> Vec<(&'static str, Policy)> {
    vec![
        ("default_set", default_set()),
        (
            "no_network",
            Policy {
                network: Network::None,
                ..default_set()
            },
        ),
        (
            "ports_only",
            Policy {
                network: Network::Ports {
                    connect: vec![22, 443],
                    bind: vec![8080],
                },
                ..default_set()
            },
        ),
        (
            "no_subprocess_exec_paths",
            Policy {
                subprocess: false,
                exec: vec!["/usr/local/bin/rg".into(), "/opt/homebrew/bin".into()],
                ..default_set()
            },
        ),
        (
            "read_only_read_paths",
            Policy {
                workspace_writable: false,
                read_anywhere: false,
                read: vec!["/Users/me/reference".into(), "/opt/datasets".into()],
                ..default_set()
            },
        ),
        (
            "write_paths_without_read_anywhere",
            Policy {
                read_anywhere: false,
                write: vec!["/Users/me/.cache/tool".into(), "/Volumes/scratch".into()],
                ..default_set()
            },
        ),
        (
            "tcc_grants",
            Policy {
                macos: MacosGrants {
                    screen_capture: true,
                    accessibility: true,
                    full_disk_access: true,
                },
                ..default_set()
            },
        ),
    ]
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/seatbelt")
        .join(format!("{name}.sb"))
}

#[test]
fn profiles_match_their_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut changed = Vec::new();
    for (name, policy) in cases() {
        let profile = seatbelt_profile(&policy);
        let path = golden_path(name);
        if update {
            std::fs::create_dir_all(path.parent().expect("golden dir")).expect("golden dir");
            std::fs::write(&path, &profile).expect("write golden file");
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; create it with UPDATE_GOLDEN=1", path.display()));
        if let Some(difference) = first_difference(&golden, &profile) {
            changed.push(format!("{name}.sb: {difference}"));
        }
    }
    assert!(
        changed.is_empty(),
        "profiles differ from their golden files (if intended: UPDATE_GOLDEN=1 cargo test -p \
         celistra-sandbox --test seatbelt, then review the diff):\n{}",
        changed.join("\n")
    );
}

fn first_difference(golden: &str, generated: &str) -> Option<String> {
    let (mut golden_lines, mut generated_lines) = (golden.lines(), generated.lines());
    for number in 1.. {
        match (golden_lines.next(), generated_lines.next()) {
            (None, None) => return None,
            (expected, actual) if expected != actual => {
                return Some(format!(
                    "line {number}: expected {expected:?}, generated {actual:?}"
                ));
            }
            _ => {}
        }
    }
    unreachable!("the loop returns at the end of both texts")
}

/// An SBPL text read as s-expressions: its string literals (decoded) and its top-level forms.
struct Parsed {
    strings: Vec<String>,
    forms: Vec<String>,
}

/// A reader for what the generator writes: lists, atoms, `"strings"` and `#"regexes"` with
/// backslash escapes, and `;` comments. Panics on unbalanced parentheses or an open string.
fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed {
        strings: vec![],
        forms: vec![],
    };
    let (mut depth, mut form) = (0usize, String::new());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ';' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' => {
                let mut string = String::new();
                loop {
                    match chars.next().expect("a string is not closed") {
                        '"' => break,
                        '\\' => string.push(chars.next().expect("escape at the end")),
                        c => string.push(c),
                    }
                }
                form.push_str("\"…\"");
                parsed.strings.push(string);
            }
            '(' => {
                depth += 1;
                form.push(c);
            }
            ')' => {
                depth = depth.checked_sub(1).expect("a ')' closes nothing");
                form.push(c);
                if depth == 0 {
                    parsed.forms.push(std::mem::take(&mut form));
                }
            }
            c if depth > 0 => form.push(c),
            c => assert!(c.is_whitespace(), "{c:?} outside any form"),
        }
    }
    assert_eq!(depth, 0, "a '(' is not closed");
    parsed
}

#[test]
fn profiles_are_balanced_and_deny_hidden_paths_last() {
    for (name, policy) in cases() {
        let parsed = parse(&seatbelt_profile(&policy));
        assert_eq!(parsed.forms[0], "(version 1)", "{name}");
        assert_eq!(parsed.forms[1], "(deny default)", "{name}");
        let last = parsed.forms.last().expect("rules");
        assert!(
            last.starts_with("(deny file-read* file-write*"),
            "{name}: the hidden paths' denial is not last: {last}"
        );
        assert!(
            !parsed.forms.iter().any(|f| f.starts_with("(allow default")),
            "{name}"
        );
    }
}

#[test]
fn paths_with_quotes_backslashes_and_newlines_stay_inside_their_strings() {
    let hostile = [
        r#"/Users/me/a "quoted") (allow default) ("dir"#,
        r"/Users/me/back\slash\",
        "/Users/me/new\nline)\n(allow default)\n;",
    ];
    let policy = Policy {
        workspace: hostile[0].into(),
        read_anywhere: false,
        read: vec![hostile[1].into()],
        write: vec![hostile[2].into()],
        hidden: hostile.iter().map(PathBuf::from).collect(),
        ..default_set()
    };
    let parsed = parse(&seatbelt_profile(&policy));
    for path in hostile {
        assert!(
            parsed.strings.iter().any(|s| s == path),
            "{path:?} is not one of the profile's strings"
        );
    }
    assert!(
        !parsed.forms.iter().any(|f| f.contains("allow default")),
        "a path added a rule"
    );
}
