//! JSON parsing whose errors say where: the file, line, column and field path. A struct is only
//! ever read from a JSON object, never from an array of its fields (see [`objects`]).

mod objects;

use std::fmt;

use serde::de::DeserializeOwned;

/// A JSON document that did not parse or did not match the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct JsonError {
    /// Where the text came from: a file path, or `request body`.
    pub origin: String,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the offending field, e.g. `agents[2].stop_signal`; empty at the top level.
    pub path: String,
    pub message: String,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.origin, self.line, self.column)?;
        if !self.path.is_empty() && self.path != "." {
            write!(f, "field `{}`: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Parses `text` as a `T`, naming `origin` in errors. Every struct in `T`, at any depth, must be a
/// JSON object.
pub fn parse<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, JsonError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value =
        serde_path_to_error::deserialize(objects::Objects(&mut deserializer)).map_err(|err| {
            let path = err.path().to_string();
            error_at(origin, path, &err.into_inner())
        })?;
    deserializer
        .end()
        .map_err(|err| error_at(origin, String::new(), &err))?;
    Ok(value)
}

fn error_at(origin: &str, path: String, err: &serde_json::Error) -> JsonError {
    JsonError {
        origin: origin.to_owned(),
        line: err.line(),
        column: err.column(),
        path,
        message: strip_position(&err.to_string()),
    }
}

/// serde_json appends " at line L column C"; the position is reported separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        count: u32,
    }

    #[test]
    fn names_line_column_and_field() {
        let text = "{\n  \"items\": [\n    {\"count\": 1},\n    {\"count\": \"x\"}\n  ]\n}";
        let err = parse::<Outer>(text, "apply.json").unwrap_err();
        assert_eq!((err.line, err.path.as_str()), (4, "items[1].count"));
        assert!(err.to_string().starts_with("apply.json:4:"), "{err}");
        assert!(err.message.contains("invalid type"), "{err}");
    }

    #[test]
    fn names_unknown_fields_and_syntax_errors() {
        let err = parse::<Outer>("{\"items\": [{\"cuont\": 1}]}", "f").unwrap_err();
        assert!(err.message.contains("unknown field `cuont`"), "{err}");
        let err = parse::<Outer>("{\"items\": [", "f").unwrap_err();
        assert!(err.message.contains("EOF"), "{err}");
        let err = parse::<Outer>("{\"items\": []} trailing", "f").unwrap_err();
        assert!(err.message.contains("trailing"), "{err}");
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Wrapper {
        inner: Option<Inner>,
        pairs: Vec<(u32, String)>,
        mode: Mode,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Off,
        Limited { max: u32 },
    }

    #[test]
    fn a_struct_is_never_read_from_an_array_at_any_depth() {
        let err = parse::<Inner>("[1]", "request body").unwrap_err();
        assert!(err.message.contains("expected a JSON object"), "{err}");
        assert!(err.message.contains("struct Inner"), "{err}");
        let err = parse::<Outer>("{\"items\": [{\"count\": 1}, [2]]}", "f").unwrap_err();
        assert_eq!(err.path, "items[1]", "{err}");
        assert!(err.message.contains("expected a JSON object"), "{err}");
        let err = parse::<Wrapper>("{\"inner\": [3], \"pairs\": [], \"mode\": \"off\"}", "f")
            .unwrap_err();
        assert_eq!(err.path, "inner", "{err}");
        let err = parse::<Wrapper>(
            "{\"inner\": null, \"pairs\": [], \"mode\": {\"limited\": [4]}}",
            "f",
        )
        .unwrap_err();
        assert!(err.message.contains("expected a JSON object"), "{err}");
    }

    #[test]
    fn lists_tuples_options_and_enums_still_parse() {
        let text = "{\"inner\": {\"count\": 5}, \"pairs\": [[1, \"a\"]], \"mode\": {\"limited\": {\"max\": 2}}}";
        let parsed: Wrapper = parse(text, "f").unwrap();
        assert_eq!(
            parsed,
            Wrapper {
                inner: Some(Inner { count: 5 }),
                pairs: vec![(1, "a".to_owned())],
                mode: Mode::Limited { max: 2 },
            }
        );
        let parsed: Wrapper =
            parse("{\"inner\": null, \"pairs\": [], \"mode\": \"off\"}", "f").unwrap();
        assert_eq!(parsed.mode, Mode::Off);
    }
}
