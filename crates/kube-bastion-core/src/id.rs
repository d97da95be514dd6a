//! Target ids: `name`, `name:port` and `scheme:name:port`, split exactly as kube-apiserver's
//! `SplitSchemeNamePort` and joined as its `JoinSchemeNamePort`.

use std::fmt;

/// The scheme a target id may name. An id without a scheme leaves the choice to resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// 80 for http, 443 for https.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed `{id}` path segment: optional scheme, non-empty name, port string (possibly empty,
/// a number or a name; not validated here, as upstream).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetId {
    scheme: Option<Scheme>,
    name: String,
    port: String,
}

/// The id did not follow the `[scheme:]name[:port]` grammar.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid target id {0:?}")]
pub struct InvalidTargetId(pub String);

impl TargetId {
    /// Splits an (already percent-decoded) id as kube-apiserver does.
    pub fn parse(id: &str) -> Result<Self, InvalidTargetId> {
        let _ = id;
        todo!()
    }

    /// The scheme, when the id named one.
    pub fn scheme(&self) -> Option<Scheme> {
        self.scheme
    }

    /// The object name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port string (empty when none was given).
    pub fn port(&self) -> &str {
        &self.port
    }

    /// `JoinSchemeNamePort`: `scheme:name:port` when a scheme is set (even with an empty
    /// port), else `name:port` when the port is non-empty, else `name`.
    pub fn join(&self) -> String {
        todo!()
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.join())
    }
}

impl std::str::FromStr for TargetId {
    type Err = InvalidTargetId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
