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
    /// Splits an (already percent-decoded) id as kube-apiserver does: on every `:`, one part
    /// is `name`, two are `name:port`, three are `scheme:name:port`, more are invalid; the name
    /// must be non-empty and the scheme `""`, `http` or `https` (case-sensitive). The port is
    /// not validated.
    ///
    /// ```
    /// use kube_bastion_core::{Scheme, TargetId};
    ///
    /// let id = TargetId::parse("https:web:8443").unwrap();
    /// assert_eq!((id.scheme(), id.name(), id.port()), (Some(Scheme::Https), "web", "8443"));
    /// // Two parts are always name:port, so this is the pod "https", port "web".
    /// let id = TargetId::parse("https:web").unwrap();
    /// assert_eq!((id.scheme(), id.name(), id.port()), (None, "https", "web"));
    /// assert!(TargetId::parse("HTTPS:web:443").is_err());
    /// ```
    pub fn parse(id: &str) -> Result<Self, InvalidTargetId> {
        let invalid = || InvalidTargetId(id.to_owned());
        let mut parts = id.split(':');
        let first = parts.next().unwrap_or_default();
        let (scheme, name, port) = match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => ("", first, ""),
            (Some(port), None, _) => ("", first, port),
            (Some(name), Some(port), None) => (first, name, port),
            (Some(_), Some(_), Some(_)) => return Err(invalid()),
        };
        let scheme = match scheme {
            "" => None,
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => return Err(invalid()),
        };
        if name.is_empty() {
            return Err(invalid());
        }
        Ok(TargetId {
            scheme,
            name: name.to_owned(),
            port: port.to_owned(),
        })
    }

    /// Builds an id from its parts; the name must be non-empty and neither name nor port may
    /// contain `:` (they could not be split back).
    pub fn new(
        scheme: Option<Scheme>,
        name: impl Into<String>,
        port: impl Into<String>,
    ) -> Result<Self, InvalidTargetId> {
        let (name, port) = (name.into(), port.into());
        if name.is_empty() || name.contains(':') || port.contains(':') {
            let id = TargetId { scheme, name, port };
            return Err(InvalidTargetId(id.join()));
        }
        Ok(TargetId { scheme, name, port })
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
    ///
    /// ```
    /// use kube_bastion_core::TargetId;
    ///
    /// // `aoeu:` splits to name "aoeu", empty port, and joins back without the colon.
    /// assert_eq!(TargetId::parse("aoeu:").unwrap().join(), "aoeu");
    /// assert_eq!(TargetId::parse("https:aoeu:").unwrap().join(), "https:aoeu:");
    /// ```
    pub fn join(&self) -> String {
        self.to_string()
    }
}

/// Writes [`TargetId::join`]'s form.
impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Some(scheme) => write!(f, "{scheme}:{}:{}", self.name, self.port),
            None if !self.port.is_empty() => write!(f, "{}:{}", self.name, self.port),
            None => f.write_str(&self.name),
        }
    }
}

impl std::str::FromStr for TargetId {
    type Err = InvalidTargetId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(id: &str) -> Option<(Option<Scheme>, String, String)> {
        TargetId::parse(id)
            .ok()
            .map(|t| (t.scheme(), t.name().to_owned(), t.port().to_owned()))
    }

    #[test]
    fn splits_like_upstream() {
        assert_eq!(split("aoeu"), Some((None, "aoeu".into(), String::new())));
        assert_eq!(
            split("aoeu:asdf"),
            Some((None, "aoeu".into(), "asdf".into()))
        );
        assert_eq!(
            split("http:aoeu:asdf"),
            Some((Some(Scheme::Http), "aoeu".into(), "asdf".into()))
        );
        assert_eq!(
            split("https:aoeu:"),
            Some((Some(Scheme::Https), "aoeu".into(), String::new()))
        );
        assert_eq!(
            split("https:foo"),
            Some((None, "https".into(), "foo".into()))
        );
        for bad in [
            "",
            ":",
            "::",
            ":asdf",
            "http::asdf",
            "a::",
            "ftp:a:b",
            "HTTPS:a:1",
            "a:b:c:d",
        ] {
            assert_eq!(split(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn invalid_id_keeps_the_raw_id() {
        assert_eq!(
            TargetId::parse("a:b:c:d"),
            Err(InvalidTargetId("a:b:c:d".to_owned()))
        );
        assert_eq!(
            "ftp:a:b".parse::<TargetId>().map_err(|e| e.to_string()),
            Err(r#"invalid target id "ftp:a:b""#.to_owned())
        );
    }

    #[test]
    fn joins_like_upstream() {
        let join = |s, n: &str, p: &str| TargetId::new(s, n, p).map(|t| t.join());
        assert_eq!(join(None, "a", ""), Ok("a".to_owned()));
        assert_eq!(join(None, "a", "1"), Ok("a:1".to_owned()));
        assert_eq!(
            join(Some(Scheme::Https), "a", ""),
            Ok("https:a:".to_owned())
        );
        assert_eq!(
            join(Some(Scheme::Http), "a", "p"),
            Ok("http:a:p".to_owned())
        );
        assert!(join(None, "", "1").is_err());
        assert!(join(None, "a:b", "").is_err());
        assert!(join(None, "a", "1:2").is_err());
    }

    #[test]
    fn scheme_helpers() {
        assert_eq!(Scheme::Http.default_port(), 80);
        assert_eq!(Scheme::Https.default_port(), 443);
        assert_eq!(Scheme::Https.to_string(), "https");
    }
}
