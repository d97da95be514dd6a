//! Reading objects from YAML and JSON: [`parse_objects`] and its [`LoadError`].

use serde_json::Value;

use super::{Object, ObjectKind};

/// Loading cluster objects failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The text is neither valid YAML nor valid JSON.
    #[error("{0}")]
    Syntax(String),
    /// A document has a supported kind but does not decode as that kind.
    #[error("document {index} ({kind}): {message}")]
    Object {
        /// Zero-based document index.
        index: usize,
        /// Its `kind`.
        kind: String,
        /// The decoding error, led by the `List` item path (`items[3]: `) when the object is
        /// inside a list, and by the object's `"namespace/name"`.
        message: String,
    },
    /// A document (or `List` item) is not a Kubernetes object: not a mapping, or a mapping
    /// without `kind`.
    #[error("document {index}: {message}")]
    NotAnObject {
        /// Zero-based document index.
        index: usize,
        /// What is wrong, naming the `List` item when there is one.
        message: String,
    },
}

/// Parses objects from YAML (one or many documents), JSON, or a `kind: List` as
/// `kubectl get -o yaml|json` writes it. Kinds other than the supported ones are skipped.
///
/// Also accepted: a stream of JSON values, a top-level JSON array of objects, typed lists
/// (`PodList`, ... as the API returns them, whose items carry no `kind`), and lists nested in
/// lists. Errors name the document (zero-based) and, inside a list, the item and object name.
pub fn parse_objects(text: &str) -> Result<Vec<Object>, LoadError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let documents = parse_documents(text)?;
    let mut objects = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        collect(index, "", None, document, &mut objects)?;
    }
    Ok(objects)
}

pub(crate) fn parse_documents(text: &str) -> Result<Vec<Value>, LoadError> {
    let trimmed = text.trim_start();
    let looks_like_json = trimmed.starts_with('{') || trimmed.starts_with('[');
    let mut json_error = None;
    if looks_like_json {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        match stream.collect::<Result<Vec<Value>, _>>() {
            Ok(values) => return Ok(values),
            // A YAML flow mapping is not always JSON: give YAML its chance.
            Err(err) => json_error = Some(err),
        }
    }
    // YAML 1.2 core booleans: `n`, `no`, `on`, `y` stay strings (a node named `n`).
    // The parser's default budget (1,024 documents, 250,000 nodes, 64 MiB of scalars) is
    // for configuration files; a cluster dump or an RBAC export holds far more. Counts that
    // the text's length already bounds grow with it; the limits on aliases (expansion
    // bombs) and nesting depth stay the parser's.
    let size = text.len();
    let options = serde_saphyr::options! {
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_documents: size.max(1_024),
            max_nodes: size.max(250_000),
            max_events: size.saturating_mul(2).max(1_000_000),
            max_total_scalar_bytes: size.max(64 << 20),
        },
    };
    match serde_saphyr::from_multiple_with_options::<Value>(text, options) {
        Ok(values) => Ok(values),
        Err(yaml_error) => Err(LoadError::Syntax(match json_error {
            Some(json_error) => format!("invalid JSON: {json_error}"),
            None => format!("invalid YAML: {yaml_error}"),
        })),
    }
}

/// The element kind of a typed list such as `PodList`.
fn list_item_kind(kind: &str) -> Option<&str> {
    // A plain `List` has items of any kind (each names its own): report it as a list too.
    if kind == "List" {
        return Some("List");
    }
    kind.strip_suffix("List").filter(|k| !k.is_empty())
}

fn collect(
    index: usize,
    path: &str,
    inherited: Option<(&str, &str)>,
    value: Value,
    out: &mut Vec<Object>,
) -> Result<(), LoadError> {
    let mut map = match value {
        Value::Null => return Ok(()),
        Value::Array(items) => {
            for (i, item) in items.into_iter().enumerate() {
                collect(index, &format!("{path}[{i}]"), inherited, item, out)?;
            }
            return Ok(());
        }
        Value::Object(map) => map,
        other => {
            return Err(LoadError::NotAnObject {
                index,
                message: format!(
                    "{}expected an object, found {}",
                    at(path),
                    type_name(&other)
                ),
            });
        }
    };
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| inherited.map(|(v, _)| v.to_owned()))
        .unwrap_or_default();
    let kind = match map.get("kind").and_then(Value::as_str) {
        Some(kind) => kind.to_owned(),
        None => match inherited {
            Some((_, kind)) => kind.to_owned(),
            None => {
                return Err(LoadError::NotAnObject {
                    index,
                    message: format!("{}object has no `kind`", at(path)),
                });
            }
        },
    };
    if let Some(item_kind) = list_item_kind(&kind) {
        let items = match map.remove("items") {
            Some(Value::Array(items)) => items,
            Some(Value::Null) | None => Vec::new(),
            Some(other) => {
                return Err(LoadError::Object {
                    index,
                    kind,
                    message: format!("{}`items` is {}, not a list", at(path), type_name(&other)),
                });
            }
        };
        // `List` items carry their own type; typed lists (`PodList`) give theirs.
        let item_type = (kind != "List").then_some((api_version.as_str(), item_kind));
        for (i, item) in items.into_iter().enumerate() {
            let item_path = if path.is_empty() {
                format!("items[{i}]")
            } else {
                format!("{path}.items[{i}]")
            };
            collect(index, &item_path, item_type, item, out)?;
        }
        return Ok(());
    }
    let Some(object_kind) = ObjectKind::from_type(&api_version, &kind) else {
        return Ok(()); // a kind the cluster model does not keep
    };
    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
        stringify_metadata(meta);
    }
    map.insert("apiVersion".into(), Value::String(api_version));
    map.insert("kind".into(), Value::String(kind.clone()));
    let value = Value::Object(map);
    let decoded = match object_kind {
        ObjectKind::Pod => serde_json::from_value(value.clone()).map(Object::Pod),
        ObjectKind::Service => serde_json::from_value(value.clone()).map(Object::Service),
        ObjectKind::Endpoints => serde_json::from_value(value.clone()).map(Object::Endpoints),
        ObjectKind::EndpointSlice => {
            serde_json::from_value(value.clone()).map(Object::EndpointSlice)
        }
        ObjectKind::Node => serde_json::from_value(value.clone()).map(Object::Node),
        ObjectKind::Namespace => serde_json::from_value(value.clone()).map(Object::Namespace),
    };
    match decoded {
        Ok(object) => {
            out.push(object);
            Ok(())
        }
        Err(err) => {
            let meta = value.get("metadata");
            let name = meta
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let named = match meta
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
            {
                Some(ns) => format!("{ns}/{name}"),
                None => name.to_owned(),
            };
            Err(LoadError::Object {
                index,
                kind,
                message: format!("{}{named:?}: {err}", at(path)),
            })
        }
    }
}

/// YAML read without a schema turns `name: 1234` or `version: 2` into numbers; kubectl
/// reads them as the strings the fields are. Names, namespaces, label and annotation values
/// that are numbers or booleans become their text.
fn stringify_metadata(meta: &mut serde_json::Map<String, Value>) {
    fn text(value: &mut Value) {
        match value {
            Value::Number(n) => *value = Value::String(n.to_string()),
            Value::Bool(b) => *value = Value::String(b.to_string()),
            _ => {}
        }
    }
    for key in ["name", "namespace", "generateName"] {
        if let Some(value) = meta.get_mut(key) {
            text(value);
        }
    }
    for key in ["labels", "annotations"] {
        if let Some(Value::Object(entries)) = meta.get_mut(key) {
            entries.values_mut().for_each(text);
        }
    }
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
