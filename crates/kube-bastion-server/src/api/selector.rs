//! `labelSelector` and `fieldSelector` for lists: equality (`a=b`, `a==b`), inequality
//! (`a!=b`), sets (`a in (x,y)`, `a notin (x)`) and existence (`a`, `!a`) on labels, and
//! `metadata.name` / `metadata.namespace` (in)equality on fields.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

/// A parsed selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Selector {
    labels: Vec<Requirement>,
    fields: Vec<(Field, bool, String)>,
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

    /// Adds the terms of a `fieldSelector` value.
    pub(crate) fn add_fields(&mut self, text: &str) -> Result<(), String> {
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
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => return Err(format!("field label not supported: {other}")),
            };
            self.fields.push((field, equal, value.trim().to_owned()));
        }
        Ok(())
    }

    /// Whether an object with this metadata is selected.
    pub(crate) fn matches(&self, meta: &ObjectMeta) -> bool {
        let label = |key: &str| {
            meta.labels
                .as_ref()
                .and_then(|l| l.get(key))
                .map(String::as_str)
        };
        let labels_ok = self.labels.iter().all(|req| match req {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        });
        let fields_ok = self.fields.iter().all(|(field, equal, value)| {
            let actual = match field {
                Field::Name => meta.name.as_deref(),
                Field::Namespace => meta.namespace.as_deref(),
            }
            .unwrap_or("");
            (actual == value) == *equal
        });
        labels_ok && fields_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("demo".to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn label_requirements() {
        let echo = meta("echo-0", &[("app", "echo"), ("tier", "web")]);
        let web = meta("web-0", &[("app", "web")]);
        let select = |text: &str| Selector::parse_labels(text).unwrap();
        assert!(select("").matches(&echo));
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
        let echo = meta("echo-0", &[]);
        let mut s = Selector::default();
        s.add_fields("metadata.name=echo-0,metadata.namespace!=other")
            .unwrap();
        assert!(s.matches(&echo));
        let mut s = Selector::default();
        s.add_fields("metadata.name=nope").unwrap();
        assert!(!s.matches(&echo));
        assert!(Selector::default().add_fields("spec.nodeName=x").is_err());
    }
}
