//! The `meta.k8s.io/v1` `Table` form of lists and objects, which `kubectl get` asks for
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`) and prints as columns.
//!
//! k8s-openapi has no `Table` type (it is not in the OpenAPI document), so the few fields
//! are written here as JSON.

use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Serialize;
use serde_json::{Value, json};

mod kinds;

/// What each row carries besides its cells (the `includeObject` query parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the query parameter value.
    pub(crate) fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("") | Some("PartialObjectMetadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"Object\", \
                 \"None\", \"PartialObjectMetadata\""
            )),
        }
    }
}

/// A column: name, type, format, description and priority (0 = shown by default, 1 = with
/// `-o wide`).
pub(crate) type Column = (&'static str, &'static str, &'static str, &'static str, u8);

/// A kind that has a table form.
pub(crate) trait Tabular: Metadata<Ty = ObjectMeta> + Serialize {
    /// The column definitions.
    const COLUMNS: &'static [Column];
    /// The cells of one row, in column order.
    fn cells(&self, now: i64) -> Vec<Value>;
}

/// Builds the Table of `items` with this `metadata` (the list's or the object's
/// resourceVersion, and `continue` and `remainingItemCount` of a page); the column
/// definitions are left out when `columns` is false (watch events after the first, as
/// kube-apiserver does: kubectl keeps the last ones it saw).
pub(crate) fn table<'a, T: Tabular + 'a>(
    items: impl IntoIterator<Item = &'a T>,
    metadata: Value,
    include: IncludeObject,
    now: i64,
    columns: bool,
) -> Value {
    let columns: Vec<Value> = if columns {
        T::COLUMNS
            .iter()
            .map(|(name, ty, format, description, priority)| {
                json!({
                    "name": name, "type": ty, "format": format,
                    "description": description, "priority": priority,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = items
        .into_iter()
        .map(|item| {
            let mut row = json!({ "cells": item.cells(now) });
            let object = match include {
                IncludeObject::None => None,
                IncludeObject::Metadata => Some(json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item.metadata(),
                })),
                IncludeObject::Object => serde_json::to_value(item).ok(),
            };
            if let Some(object) = object {
                row["object"] = object;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// kubectl's short human duration (`45s`, `3m12s`, `5h`, `12d`, `2y30d`).
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    let seconds = seconds.max(0);
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        }
    } else {
        format!("{}y", days / 365)
    }
}

pub(crate) fn age(meta: &ObjectMeta, now: i64) -> Value {
    match &meta.creation_timestamp {
        Some(Time(ts)) => Value::from(human_duration(now - ts.as_second())),
        None => Value::from("<unknown>"),
    }
}

pub(crate) fn name(meta: &ObjectMeta) -> Value {
    Value::from(meta.name.clone().unwrap_or_default())
}

pub(crate) fn or_none(items: Vec<String>) -> String {
    if items.is_empty() {
        "<none>".to_owned()
    } else {
        items.join(",")
    }
}

/// `a,b,c + N more...` as kubectl prints long address lists.
pub(crate) fn abbreviated(items: Vec<String>) -> String {
    const MAX: usize = 3;
    if items.is_empty() {
        return "<none>".to_owned();
    }
    if items.len() > MAX {
        format!("{} + {} more...", items[..MAX].join(","), items.len() - MAX)
    } else {
        items.join(",")
    }
}

pub(crate) const NAME: Column = (
    "Name",
    "string",
    "name",
    "Name must be unique within a namespace.",
    0,
);
pub(crate) const AGE: Column = ("Age", "string", "", "Time since the object was created.", 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(190), "3m10s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(100 * 86400), "100d");
        assert_eq!(human_duration(3 * 365 * 86400), "3y");
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn include_object_values() {
        assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
        assert_eq!(
            IncludeObject::parse(Some("Object")),
            Ok(IncludeObject::Object)
        );
        assert!(IncludeObject::parse(Some("x")).is_err());
    }
}
