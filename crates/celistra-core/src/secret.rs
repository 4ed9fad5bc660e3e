//! Secrets as specs name them: the rules for a secret's name and value, and the references a spec
//! makes (`secrets: [NAME]`, and `env` values `secret:NAME`). The values themselves live only in
//! the daemon's encrypted store and in the memory of a spawn.

use std::collections::BTreeSet;

use celistra_proto::AgentSpec;

/// What an `env` value starts with to take a secret under another variable name
/// (`TOKEN=secret:GITHUB_TOKEN`).
pub const REFERENCE_PREFIX: &str = "secret:";
/// Longest secret name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Largest secret value, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Shortest secret value, in bytes: shorter ones would be found (and masked) all over ordinary
/// output, and would mask too little to hide anything.
pub const MIN_VALUE_LEN: usize = 4;

/// Checks a secret's name: like an environment variable, `[A-Z_][A-Z0-9_]*`, at most
/// [`MAX_NAME_LEN`] bytes.
pub fn validate_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_uppercase() || b == b'_');
    if !first_ok
        || !bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        || name.len() > MAX_NAME_LEN
    {
        return Err(format!(
            "bad secret name `{name}`: use 1 to {MAX_NAME_LEN} of A-Z, 0-9 and `_`, not starting with a digit (like an environment variable)"
        ));
    }
    Ok(())
}

/// Checks a secret's value: not empty, at least [`MIN_VALUE_LEN`] and at most [`MAX_VALUE_LEN`]
/// bytes, and without a NUL byte (an environment variable cannot hold one).
pub fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("the secret's value is empty".into());
    }
    if value.len() < MIN_VALUE_LEN {
        return Err(format!(
            "the secret's value is {} bytes long; at least {MIN_VALUE_LEN} are needed, since a shorter one is too short to mask in the agent's output",
            value.len()
        ));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(format!(
            "the secret's value is {} bytes long; at most {MAX_VALUE_LEN} are allowed",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err(
            "the secret's value contains a NUL byte, which an environment variable cannot hold"
                .into(),
        );
    }
    Ok(())
}

/// The secret an `env` value refers to, if it is a reference (`secret:NAME`).
pub fn env_reference(value: &str) -> Option<&str> {
    value.strip_prefix(REFERENCE_PREFIX)
}

/// The environment a spec's secrets give the agent, as (variable, secret name): each of `secrets`
/// under its own name, then each `env` reference under its variable (an `env` entry wins over a
/// `secrets` one of the same name).
pub fn bindings(spec: &AgentSpec) -> Vec<(String, String)> {
    let mut bound: Vec<(String, String)> = spec
        .secrets
        .iter()
        .filter(|name| !spec.env.contains_key(*name))
        .map(|name| (name.clone(), name.clone()))
        .collect();
    bound.extend(spec.env.iter().filter_map(|(key, value)| {
        env_reference(value).map(|secret| (key.clone(), secret.to_owned()))
    }));
    bound
}

/// Every secret a spec refers to, by name.
pub fn references(spec: &AgentSpec) -> BTreeSet<String> {
    bindings(spec)
        .into_iter()
        .map(|(_, secret)| secret)
        .collect()
}

/// Checks the references of a spec: well-formed names, no name twice in `secrets`.
pub fn validate_references(spec: &AgentSpec) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for name in &spec.secrets {
        validate_name(name).map_err(|e| format!("secrets: {e}"))?;
        if !seen.insert(name) {
            return Err(format!("secrets: `{name}` is named twice"));
        }
    }
    for (key, value) in &spec.env {
        if let Some(secret) = env_reference(value) {
            validate_name(secret).map_err(|e| format!("env {key}: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_upper_case_environment_variable_names() {
        for good in ["A", "_X", "GITHUB_TOKEN", "K8S_2", &"A".repeat(64)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in ["", "a", "1A", "A-B", "A B", "Ä", &"A".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_must_be_long_enough_to_mask_and_not_too_long() {
        assert!(validate_value("").unwrap_err().contains("empty"));
        let short = validate_value("abc").unwrap_err();
        assert!(short.contains("too short to mask"), "{short}");
        assert_eq!(validate_value("abcd"), Ok(()));
        assert_eq!(validate_value(&"x".repeat(MAX_VALUE_LEN)), Ok(()));
        assert!(validate_value(&"x".repeat(MAX_VALUE_LEN + 1)).is_err());
        assert!(validate_value("ab\0cd").is_err());
    }

    #[test]
    fn a_spec_refers_to_secrets_by_list_and_by_env_value() {
        let mut spec = AgentSpec {
            secrets: vec!["A_TOKEN".into(), "SHARED".into()],
            ..AgentSpec::default()
        };
        spec.env.insert("TOKEN".into(), "secret:B_TOKEN".into());
        spec.env.insert("PLAIN".into(), "value".into());
        spec.env.insert("SHARED".into(), "secret:C".into());
        assert_eq!(
            bindings(&spec),
            vec![
                ("A_TOKEN".to_owned(), "A_TOKEN".to_owned()),
                ("SHARED".to_owned(), "C".to_owned()),
                ("TOKEN".to_owned(), "B_TOKEN".to_owned()),
            ]
        );
        assert_eq!(
            references(&spec).into_iter().collect::<Vec<_>>(),
            ["A_TOKEN", "B_TOKEN", "C"]
        );
        assert_eq!(validate_references(&spec), Ok(()));
        spec.env.insert("BAD".into(), "secret:lower".into());
        assert!(validate_references(&spec).unwrap_err().contains("env BAD"));
    }
}
