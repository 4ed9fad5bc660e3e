//! Agent ids (`ag-` + lowercase alphanumerics), agent names, machine names and environment keys:
//! generation and rules.

const ID_PREFIX: &str = "ag-";
const ID_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Longest agent name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Whether `text` has the shape of an agent id: `ag-` then 4 or more lowercase letters or digits.
pub fn is_agent_id(text: &str) -> bool {
    text.strip_prefix(ID_PREFIX).is_some_and(|rest| {
        rest.len() >= 4
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// Builds an id from random bytes, one character per byte that falls in the unbiased range
/// (bytes of 252 and above are skipped). Returns `None` when fewer than `len` bytes were usable.
pub fn agent_id_from_random(random: &[u8], len: usize) -> Option<String> {
    let chars: String = random
        .iter()
        .filter(|&&b| b < 252)
        .take(len)
        .map(|&b| char::from(ID_ALPHABET[usize::from(b % 36)]))
        .collect();
    (chars.len() == len).then(|| format!("{ID_PREFIX}{chars}"))
}

/// Checks an operator-chosen agent name.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("agent name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "agent name is {} characters long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "agent name `{name}` contains `{bad}`; use letters, digits, `.`, `_` and `-`"
        ));
    }
    if name.starts_with(['-', '.']) {
        return Err(format!(
            "agent name `{name}` must not start with `-` or `.`"
        ));
    }
    if is_agent_id(name) {
        return Err(format!(
            "agent name `{name}` looks like an agent id; pick a name that does not start with `ag-`"
        ));
    }
    Ok(())
}

/// Longest machine name accepted: a DNS label.
pub const MAX_MACHINE_NAME_LEN: usize = 63;

/// Checks a machine's name (`--machine-name`): a DNS label in lower case (`a-z`, `0-9`, `-`, not
/// first or last), so that `machine/agent` is unambiguous and it can name a host.
pub fn validate_machine_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_MACHINE_NAME_LEN {
        return Err(format!(
            "machine name `{name}` must be 1 to {MAX_MACHINE_NAME_LEN} characters long"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "machine name `{name}` contains `{bad}`; use lower-case letters, digits and `-`"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "machine name `{name}` must not start or end with `-`"
        ));
    }
    Ok(())
}

/// The machine name a host name gives: its first label, lower-cased, other characters made `-`,
/// cut to [`MAX_MACHINE_NAME_LEN`]; `machine` if nothing is left.
pub fn machine_name_from_host(host: &str) -> String {
    let label = host.split('.').next().unwrap_or_default();
    let mapped: String = label
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(MAX_MACHINE_NAME_LEN)
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() {
        "machine".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// A name for an agent spawned without one: the program's file name (`python3 run.py` → `python3`),
/// made valid, then `-2`, `-3`, … until `is_taken` says no.
pub fn generate_name(command: &str, is_taken: impl Fn(&str) -> bool) -> String {
    let program = command.split_whitespace().next().unwrap_or("agent");
    let base_name = program.rsplit('/').next().unwrap_or(program);
    let mut base: String = base_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(MAX_NAME_LEN - 8)
        .collect();
    base = base.trim_start_matches(['-', '.']).to_owned();
    if base.is_empty() || validate_name(&base).is_err() {
        base = "agent".into();
    }
    if !is_taken(&base) {
        return base;
    }
    (2u64..)
        .map(|n| format!("{base}-{n}"))
        .find(|candidate| !is_taken(candidate))
        .expect("an unbounded range always yields a free name")
}

/// Checks an environment variable's key and value.
pub fn validate_env(key: &str, value: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "environment key `{key}` is invalid; use letters, digits and `_`, not starting with a digit"
        ));
    }
    if value.contains('\0') {
        return Err(format!("environment value of `{key}` contains a NUL byte"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn machine_names_are_lower_case_dns_labels_and_host_names_give_one() {
        use super::{machine_name_from_host, validate_machine_name};
        for good in ["m1", "build-box", "a", &"x".repeat(63)] {
            assert_eq!(validate_machine_name(good), Ok(()), "{good}");
        }
        for bad in ["", "M1", "m/1", "-m", "m-", "m.1", "m_1", &"x".repeat(64)] {
            assert!(validate_machine_name(bad).is_err(), "{bad}");
        }
        assert_eq!(machine_name_from_host("Build_Box.example.org"), "build-box");
        assert_eq!(machine_name_from_host("--"), "machine");
        assert_eq!(machine_name_from_host(""), "machine");
        assert_eq!(machine_name_from_host(&"a".repeat(100)).len(), 63);
    }

    proptest::proptest! {
        #[test]
        fn any_host_name_gives_a_valid_machine_name(host in ".{0,80}") {
            let name = super::machine_name_from_host(&host);
            proptest::prop_assert_eq!(super::validate_machine_name(&name), Ok(()));
        }
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_have_the_documented_shape() {
        assert!(is_agent_id("ag-a1b2"));
        assert!(is_agent_id("ag-a1b2c3"));
        for bad in ["ag-abc", "ag-ABCD", "ab-abcd", "ag-ab_d", "ag-"] {
            assert!(!is_agent_id(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn generated_ids_are_ids(random in proptest::collection::vec(any::<u8>(), 16)) {
            if let Some(id) = agent_id_from_random(&random, 4) {
                prop_assert!(is_agent_id(&id));
                prop_assert_eq!(id.len(), 7);
            }
        }
    }

    #[test]
    fn name_rules() {
        assert!(validate_name("scraper").is_ok());
        assert!(validate_name("task-3.v2_x").is_ok());
        for bad in ["", "-x", ".x", "a b", "a/b", "ag-abcd", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_names_avoid_taken_ones() {
        assert_eq!(generate_name("python3 run.py", |_| false), "python3");
        assert_eq!(
            generate_name("/usr/bin/sleep 1", |n| n == "sleep"),
            "sleep-2"
        );
        assert_eq!(generate_name("'weird' x", |_| false), "weird");
        assert_eq!(generate_name("ag-abcd", |_| false), "agent");
        assert_eq!(
            generate_name("   ", |n| n == "agent" || n == "agent-2"),
            "agent-3"
        );
    }

    #[test]
    fn env_rules() {
        assert!(validate_env("PATH_2", "x").is_ok());
        assert!(validate_env("2X", "x").is_err());
        assert!(validate_env("A=B", "x").is_err());
        assert!(validate_env("A", "x\0y").is_err());
    }
}
