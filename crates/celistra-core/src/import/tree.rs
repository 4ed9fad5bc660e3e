//! A parsed document with the line of every node: what the PM2 importer walks, whether the text
//! was YAML, JSON (YAML 1.2 reads it, keeping lines) or node's JSON rendering of a JavaScript file
//! (no lines).

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// A value and the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub line: Option<usize>,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    List(Vec<Node>),
    /// Keys in source order, each with the line it is on.
    Map(Vec<(String, Option<usize>, Node)>),
}

impl Node {
    /// Parses YAML (or JSON) text; the error says where.
    pub(crate) fn from_yaml(text: &str) -> Result<Node, (Option<usize>, String)> {
        let documents = MarkedYaml::load_from_str(text)
            .map_err(|e| (Some(e.marker().line()), e.info().to_owned()))?;
        match documents.into_iter().next() {
            Some(document) => from_marked(document),
            None => Ok(Node {
                line: Some(1),
                value: Value::Null,
            }),
        }
    }

    /// Takes a JSON value that has no lines (node's rendering of an evaluated file).
    pub(crate) fn from_json(value: serde_json::Value) -> Node {
        let value = match value {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Text(s),
            serde_json::Value::Array(items) => {
                Value::List(items.into_iter().map(Node::from_json).collect())
            }
            serde_json::Value::Object(map) => Value::Map(
                map.into_iter()
                    .map(|(k, v)| (k, None, Node::from_json(v)))
                    .collect(),
            ),
        };
        Node { line: None, value }
    }

    /// The value as text, for keys that take a string (numbers and booleans are written out, as
    /// in an environment).
    pub(crate) fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Text(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null | Value::List(_) | Value::Map(_) => None,
        }
    }

    /// What kind of value this is, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Text(_) => "a string",
            Value::List(_) => "a list",
            Value::Map(_) => "an object",
        }
    }
}

fn from_marked(node: MarkedYaml<'_>) -> Result<Node, (Option<usize>, String)> {
    let line = Some(node.span.start.line());
    let value = match node.data {
        YamlData::Value(scalar) => scalar_value(scalar),
        YamlData::Representation(text, _, _) => Value::Text(text.into_owned()),
        YamlData::Sequence(items) => Value::List(
            items
                .into_iter()
                .map(from_marked)
                .collect::<Result<_, _>>()?,
        ),
        YamlData::Mapping(entries) => {
            let mut map = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                let key_line = Some(key.span.start.line());
                let name = match from_marked(key)?.scalar_text() {
                    Some(name) => name,
                    None => return Err((key_line, "a key is not a string".into())),
                };
                map.push((name, key_line, from_marked(value)?));
            }
            Value::Map(map)
        }
        YamlData::Tagged(_, inner) => return from_marked(*inner),
        YamlData::Alias(_) => {
            return Err((
                line,
                "YAML aliases (`*name`) are not supported; write the value out".into(),
            ));
        }
        YamlData::BadValue => return Err((line, "a value does not parse".into())),
    };
    Ok(Node { line, value })
}

fn scalar_value(scalar: Scalar<'_>) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(b),
        Scalar::Integer(i) => Value::Int(i),
        Scalar::FloatingPoint(f) => Value::Float(f.into_inner()),
        Scalar::String(s) => Value::Text(s.into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_keep_the_line_of_every_key() {
        let yaml = Node::from_yaml("apps:\n  - name: api\n    script: app.js\n").unwrap();
        let Value::Map(top) = yaml.value else {
            panic!()
        };
        assert_eq!((top[0].0.as_str(), top[0].1), ("apps", Some(1)));
        let Value::List(apps) = &top[0].2.value else {
            panic!()
        };
        let Value::Map(app) = &apps[0].value else {
            panic!()
        };
        assert_eq!(app[1].0, "script");
        assert_eq!(app[1].1, Some(3));
        let json = Node::from_yaml("{\n \"apps\": [\n  {\"name\": \"x\",\n   \"instances\": 2}]}")
            .unwrap();
        let Value::Map(top) = json.value else {
            panic!()
        };
        let Value::List(apps) = &top[0].2.value else {
            panic!()
        };
        let Value::Map(app) = &apps[0].value else {
            panic!()
        };
        assert_eq!((app[1].1, &app[1].2.value), (Some(4), &Value::Int(2)));
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let (line, _) = Node::from_yaml("apps:\n  - name: [x\n").unwrap_err();
        assert!(line.is_some());
    }
}
