//! `labelSelector` and `fieldSelector` for lists and watches: equality (`a=b`, `a==b`),
//! inequality (`a!=b`), sets (`a in (x,y)`, `a notin (x)`) and existence (`a`, `!a`) on
//! labels, and (in)equality on `metadata.name`, `metadata.namespace` and the kind's own
//! field labels ([`Served::FIELDS`], e.g. `spec.nodeName` for pods).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::kinds::{Served, namespace_field};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Selector {
    labels: Vec<Requirement>,
    /// (label, equal or not, value).
    fields: Vec<(String, bool, String)>,
}

/// Splits on commas that are not inside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn set_values(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    let bad = || format!("unable to parse requirement: {term:?}");
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(key.trim().to_owned()));
    }
    let mut words = term.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or("").to_owned();
    match words.next().map(str::trim_start) {
        None => Ok(Requirement::Exists(key)),
        Some(rest) => {
            if let Some(set) = rest.strip_prefix("notin") {
                Ok(Requirement::NotIn(key, set_values(set).ok_or_else(bad)?))
            } else if let Some(set) = rest.strip_prefix("in") {
                Ok(Requirement::In(key, set_values(set).ok_or_else(bad)?))
            } else {
                Err(bad())
            }
        }
    }
}

impl Selector {
    /// Parses a `labelSelector` value (empty selects everything).
    pub(crate) fn parse_labels(text: &str) -> Result<Self, String> {
        let labels = split_terms(text)
            .into_iter()
            .map(parse_term)
            .collect::<Result<_, _>>()?;
        Ok(Selector {
            labels,
            fields: Vec::new(),
        })
    }

    /// Whether it selects everything.
    pub(crate) fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// Parses both selectors of a query for kind `T`.
    pub(crate) fn parse<T: Served>(labels: &str, fields: &str) -> Result<Self, String> {
        let mut selector = Self::parse_labels(labels)?;
        selector.add_fields(fields, T::FIELDS)?;
        Ok(selector)
    }

    /// Adds `metadata.name=<name>` (the watch of one object).
    pub(crate) fn add_name(&mut self, name: &str) {
        self.fields
            .push(("metadata.name".to_owned(), true, name.to_owned()));
    }

    /// Adds the terms of a `fieldSelector` value; `extra` are the kind's own field labels.
    pub(crate) fn add_fields(&mut self, text: &str, extra: &[&str]) -> Result<(), String> {
        for term in split_terms(text) {
            let (key, equal, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid selector: {term:?}; can't understand {term:?}"
                ));
            };
            let field = match key.trim() {
                known @ ("metadata.name" | "metadata.namespace") => known,
                other if extra.contains(&other) => other,
                other => return Err(format!("field label not supported: {other}")),
            };
            self.fields
                .push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(())
    }

    /// Whether `object` is selected.
    pub(crate) fn matches<T: Served>(&self, object: &T) -> bool {
        let meta = object.metadata();
        self.labels_match(meta)
            && self.fields.iter().all(|(field, equal, value)| {
                let actual = match field.as_str() {
                    "metadata.name" => meta.name.clone().unwrap_or_default(),
                    "metadata.namespace" => namespace_field::<T>(meta).to_owned(),
                    other => object.field(other).unwrap_or_default(),
                };
                (actual == *value) == *equal
            })
    }

    fn labels_match(&self, meta: &ObjectMeta) -> bool {
        let label = |key: &str| {
            meta.labels
                .as_ref()
                .and_then(|l| l.get(key))
                .map(String::as_str)
        };
        self.labels.iter().all(|req| match req {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use k8s_openapi::api::core::v1::{Pod, PodSpec};

    fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("demo".to_owned()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".to_owned()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn label_requirements() {
        let echo = pod("echo-0", &[("app", "echo"), ("tier", "web")]);
        let web = pod("web-0", &[("app", "web")]);
        let select = |text: &str| Selector::parse_labels(text).unwrap();
        assert!(select("").matches(&echo) && select("").is_empty());
        assert!(select("app=echo").matches(&echo) && !select("app=echo").matches(&web));
        assert!(select("app==web").matches(&web));
        assert!(select("app!=echo").matches(&web) && !select("app!=echo").matches(&echo));
        assert!(select("tier").matches(&echo) && !select("tier").matches(&web));
        assert!(select("!tier").matches(&web));
        assert!(select("app in (echo, web)").matches(&web));
        assert!(select("app notin (echo)").matches(&web));
        assert!(select("app=echo,tier=web").matches(&echo));
        assert!(Selector::parse_labels("app in echo").is_err());
    }

    #[test]
    fn field_requirements() {
        let echo = pod("echo-0", &[]);
        let s =
            Selector::parse::<Pod>("", "metadata.name=echo-0,metadata.namespace!=other").unwrap();
        assert!(s.matches(&echo) && !s.is_empty());
        let s = Selector::parse::<Pod>("", "metadata.name=nope").unwrap();
        assert!(!s.matches(&echo));
        assert!(
            Selector::parse::<Pod>("", "spec.nodeName=n1")
                .unwrap()
                .matches(&echo)
        );
        assert!(
            !Selector::parse::<Pod>("", "spec.nodeName=n2")
                .unwrap()
                .matches(&echo)
        );
        let node_field = Selector::parse::<k8s_openapi::api::core::v1::Node>("", "spec.nodeName=x");
        assert_eq!(
            node_field.unwrap_err(),
            "field label not supported: spec.nodeName"
        );
    }
}
