//! URL references parsed and serialized the way Go's `net/url` does.
//!
//! kube-apiserver parses every `Location` header and every rewritable HTML attribute with
//! `url.Parse` and writes it back with `(*url.URL).String()`. The escaping rules of that pair
//! are visible on the wire (`/a b` becomes `/a%20b`, `<` becomes `%3C`, an unparsable value is
//! an error with a specific text), so this module reproduces them byte for byte rather than
//! using a WHATWG URL parser, which normalizes differently.
//!
//! Everything works on bytes: header values may carry any octet and Go strings are bytes.

use std::fmt;

pub(crate) use kube_bastion_core::go::join;
use kube_bastion_core::go::{
    EscapeMode as Mode, escape, quote as go_quote, unescape, valid_encoded,
};

/// `url.Parse` failed. `Display` is Go's `*url.Error` text: `parse "<url>": <reason>`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
pub struct UrlParseError {
    url: Vec<u8>,
    reason: String,
}

impl UrlParseError {
    fn new(url: &[u8], reason: String) -> Self {
        Self {
            url: url.to_vec(),
            reason,
        }
    }
}

impl fmt::Display for UrlParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "parse {}: {}", go_quote(&self.url), self.reason)
    }
}

impl std::error::Error for UrlParseError {}

/// The user information of an authority (`user[:password]@`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct UserInfo {
    username: Vec<u8>,
    password: Option<Vec<u8>>,
}

/// A parsed URL reference with Go's field model (`Scheme`, `Opaque`, `User`, `Host`, `Path`,
/// `RawPath`, `OmitHost`, `ForceQuery`, `RawQuery`, `Fragment`, `RawFragment`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct GoUrl {
    pub(crate) scheme: Vec<u8>,
    opaque: Vec<u8>,
    user: Option<UserInfo>,
    pub(crate) host: Vec<u8>,
    pub(crate) path: Vec<u8>,
    raw_path: Vec<u8>,
    omit_host: bool,
    force_query: bool,
    raw_query: Vec<u8>,
    fragment: Vec<u8>,
    raw_fragment: Vec<u8>,
}

impl GoUrl {
    /// `url.Parse`.
    pub(crate) fn parse(raw: &[u8]) -> Result<GoUrl, UrlParseError> {
        let (before, frag) = match raw.iter().position(|&c| c == b'#') {
            Some(i) => (&raw[..i], &raw[i + 1..]),
            None => (raw, &raw[raw.len()..]),
        };
        let mut url = parse_no_fragment(before).map_err(|e| UrlParseError::new(before, e))?;
        if frag.is_empty() {
            return Ok(url);
        }
        url.set_fragment(frag)
            .map_err(|e| UrlParseError::new(raw, e))?;
        Ok(url)
    }

    fn set_fragment(&mut self, f: &[u8]) -> Result<(), String> {
        let frag = unescape(f, Mode::Fragment)?;
        self.raw_fragment = if escape(&frag, Mode::Fragment) == f {
            Vec::new()
        } else {
            f.to_vec()
        };
        self.fragment = frag;
        Ok(())
    }

    fn set_path(&mut self, p: &[u8]) -> Result<(), String> {
        let path = unescape(p, Mode::Path)?;
        self.raw_path = if escape(&path, Mode::Path) == p {
            Vec::new()
        } else {
            p.to_vec()
        };
        self.path = path;
        Ok(())
    }

    /// Replaces the decoded path (Go: assigning `u.Path`; `RawPath` is kept and ignored on
    /// output unless it still matches).
    pub(crate) fn replace_path(&mut self, path: Vec<u8>) {
        self.path = path;
    }

    /// Sets scheme and host (Go: assigning `u.Scheme` and `u.Host`).
    pub(crate) fn set_origin(&mut self, scheme: &[u8], host: &[u8]) {
        self.scheme = scheme.to_vec();
        self.host = host.to_vec();
    }

    fn escaped_path(&self) -> Vec<u8> {
        if !self.raw_path.is_empty()
            && valid_encoded(&self.raw_path, Mode::Path)
            && unescape(&self.raw_path, Mode::Path).is_ok_and(|p| p == self.path)
        {
            return self.raw_path.clone();
        }
        if self.path == b"*" {
            return b"*".to_vec();
        }
        escape(&self.path, Mode::Path)
    }

    fn escaped_fragment(&self) -> Vec<u8> {
        if !self.raw_fragment.is_empty()
            && valid_encoded(&self.raw_fragment, Mode::Fragment)
            && unescape(&self.raw_fragment, Mode::Fragment).is_ok_and(|f| f == self.fragment)
        {
            return self.raw_fragment.clone();
        }
        escape(&self.fragment, Mode::Fragment)
    }

    /// `(*url.URL).String()`.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.path.len() + self.host.len() + 32);
        if !self.scheme.is_empty() {
            buf.extend_from_slice(&self.scheme);
            buf.push(b':');
        }
        if !self.opaque.is_empty() {
            buf.extend_from_slice(&self.opaque);
        } else {
            let has_authority =
                !self.scheme.is_empty() || !self.host.is_empty() || self.user.is_some();
            let omitted = self.omit_host && self.host.is_empty() && self.user.is_none();
            if has_authority && !omitted {
                if !self.host.is_empty() || !self.path.is_empty() || self.user.is_some() {
                    buf.extend_from_slice(b"//");
                }
                if let Some(user) = &self.user {
                    buf.extend_from_slice(&escape(&user.username, Mode::UserPassword));
                    if let Some(password) = &user.password {
                        buf.push(b':');
                        buf.extend_from_slice(&escape(password, Mode::UserPassword));
                    }
                    buf.push(b'@');
                }
                if !self.host.is_empty() {
                    buf.extend_from_slice(&escape(&self.host, Mode::Host));
                }
            }
            let path = self.escaped_path();
            if !path.is_empty() && path[0] != b'/' && !self.host.is_empty() {
                buf.push(b'/');
            }
            if buf.is_empty() {
                // RFC 3986 4.2: a first segment with a colon would read as a scheme.
                let segment_end = path.iter().position(|&c| c == b'/').unwrap_or(path.len());
                if path[..segment_end].contains(&b':') {
                    buf.extend_from_slice(b"./");
                }
            }
            buf.extend_from_slice(&path);
        }
        if self.force_query || !self.raw_query.is_empty() {
            buf.push(b'?');
            buf.extend_from_slice(&self.raw_query);
        }
        if !self.fragment.is_empty() {
            buf.push(b'#');
            buf.extend_from_slice(&self.escaped_fragment());
        }
        buf
    }
}

fn parse_no_fragment(raw: &[u8]) -> Result<GoUrl, String> {
    if raw.iter().any(|&c| c < 0x20 || c == 0x7f) {
        return Err("net/url: invalid control character in URL".to_owned());
    }
    let mut url = GoUrl::default();
    if raw == b"*" {
        url.path = b"*".to_vec();
        return Ok(url);
    }
    let (scheme, mut rest) = get_scheme(raw)?;
    url.scheme = scheme.to_ascii_lowercase();

    if rest.ends_with(b"?") && rest.iter().filter(|&&c| c == b'?').count() == 1 {
        url.force_query = true;
        rest = &rest[..rest.len() - 1];
    } else if let Some(i) = rest.iter().position(|&c| c == b'?') {
        url.raw_query = rest[i + 1..].to_vec();
        rest = &rest[..i];
    }

    if !rest.starts_with(b"/") {
        if !url.scheme.is_empty() {
            // Rootless paths are opaque (RFC 3986 3.3).
            url.opaque = rest.to_vec();
            return Ok(url);
        }
        let segment_end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
        if rest[..segment_end].contains(&b':') {
            return Err("first path segment in URL cannot contain colon".to_owned());
        }
    }

    if (!url.scheme.is_empty() || !rest.starts_with(b"///")) && rest.starts_with(b"//") {
        let authority_and_path = &rest[2..];
        let (authority, path) = match authority_and_path.iter().position(|&c| c == b'/') {
            Some(i) => (&authority_and_path[..i], &authority_and_path[i..]),
            None => (
                authority_and_path,
                &authority_and_path[authority_and_path.len()..],
            ),
        };
        let (user, host) = parse_authority(authority)?;
        url.user = user;
        url.host = host;
        rest = path;
    } else if !url.scheme.is_empty() && rest.starts_with(b"/") {
        url.omit_host = true;
    }
    url.set_path(rest)?;
    Ok(url)
}

fn get_scheme(raw: &[u8]) -> Result<(&[u8], &[u8]), String> {
    for (i, &c) in raw.iter().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' => {
                if i == 0 {
                    return Ok((&raw[..0], raw));
                }
            }
            b':' => {
                if i == 0 {
                    return Err("missing protocol scheme".to_owned());
                }
                return Ok((&raw[..i], &raw[i + 1..]));
            }
            _ => return Ok((&raw[..0], raw)),
        }
    }
    Ok((&raw[..0], raw))
}

fn parse_authority(authority: &[u8]) -> Result<(Option<UserInfo>, Vec<u8>), String> {
    let at = authority.iter().rposition(|&c| c == b'@');
    let host = match at {
        Some(i) => parse_host(&authority[i + 1..])?,
        None => parse_host(authority)?,
    };
    let Some(at) = at else {
        return Ok((None, host));
    };
    let userinfo = &authority[..at];
    if !valid_userinfo(userinfo) {
        return Err("net/url: invalid userinfo".to_owned());
    }
    let user = match userinfo.iter().position(|&c| c == b':') {
        None => UserInfo {
            username: unescape(userinfo, Mode::UserPassword)?,
            password: None,
        },
        Some(i) => UserInfo {
            username: unescape(&userinfo[..i], Mode::UserPassword)?,
            password: Some(unescape(&userinfo[i + 1..], Mode::UserPassword)?),
        },
    };
    Ok((Some(user), host))
}

fn valid_userinfo(s: &[u8]) -> bool {
    s.iter().all(|&c| {
        c.is_ascii_alphanumeric()
            || kube_bastion_core::go::is_sub_delim(c)
            || matches!(c, b'-' | b'.' | b'_' | b':' | b'~' | b'%' | b'@')
    })
}

fn valid_optional_port(port: &[u8]) -> bool {
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

fn parse_host(host: &[u8]) -> Result<Vec<u8>, String> {
    if host.starts_with(b"[") {
        let Some(i) = host.iter().rposition(|&c| c == b']') else {
            return Err("missing ']' in host".to_owned());
        };
        let colon_port = &host[i + 1..];
        if !valid_optional_port(colon_port) {
            return Err(format!("invalid port {} after host", go_quote(colon_port)));
        }
        if let Some(zone) = find(&host[..i], b"%25") {
            let mut out = unescape(&host[..zone], Mode::Host)?;
            out.extend(unescape(&host[zone..i], Mode::Zone)?);
            out.extend(unescape(&host[i..], Mode::Host)?);
            return Ok(out);
        }
    } else if let Some(i) = host.iter().rposition(|&c| c == b':') {
        let colon_port = &host[i..];
        if !valid_optional_port(colon_port) {
            return Err(format!("invalid port {} after host", go_quote(colon_port)));
        }
    }
    unescape(host, Mode::Host)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(s: &str) -> String {
        String::from_utf8(GoUrl::parse(s.as_bytes()).unwrap().to_bytes()).unwrap()
    }

    fn error(s: &str) -> String {
        GoUrl::parse(s.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn serializes_like_go() {
        assert_eq!(roundtrip("http://a.b/c?d=e#f"), "http://a.b/c?d=e#f");
        assert_eq!(roundtrip("HTTP://a.b/c"), "http://a.b/c");
        assert_eq!(roundtrip("/a b/(c)"), "/a%20b/%28c%29");
        assert_eq!(roundtrip("/a%2Fb"), "/a%2Fb");
        assert_eq!(roundtrip("mailto:a@b.c"), "mailto:a@b.c");
        assert_eq!(roundtrip("//h:1/x"), "//h:1/x");
        assert_eq!(roundtrip("http:/x"), "http:/x");
        assert_eq!(roundtrip("x?"), "x?");
        assert_eq!(roundtrip("#top"), "#top");
        assert_eq!(roundtrip("u:p@h"), "u:p@h");
        assert_eq!(roundtrip("http://u:p%40@h/"), "http://u:p%40@h/");
        assert_eq!(roundtrip("/%e2%82%ac"), "/%e2%82%ac");
        assert_eq!(roundtrip("/€"), "/%E2%82%AC");
        assert_eq!(roundtrip("#a b"), "#a%20b");
        assert_eq!(roundtrip("http://[::1]:80/"), "http://[::1]:80/");
        assert_eq!(roundtrip("*"), "*");
        assert_eq!(roundtrip(""), "");
    }

    #[test]
    fn errors_like_go() {
        assert_eq!(
            error("http://[bad"),
            r#"parse "http://[bad": missing ']' in host"#
        );
        assert_eq!(error(":x"), r#"parse ":x": missing protocol scheme"#);
        assert_eq!(
            error("1a:b"),
            r#"parse "1a:b": first path segment in URL cannot contain colon"#
        );
        assert_eq!(error("/a%zz"), r#"parse "/a%zz": invalid URL escape "%zz""#);
        assert_eq!(error("/a%4"), r#"parse "/a%4": invalid URL escape "%4""#);
        assert_eq!(
            error("http://h:x/"),
            r#"parse "http://h:x/": invalid port ":x" after host"#
        );
        assert_eq!(
            error("http://a b/"),
            r#"parse "http://a b/": invalid character " " in host name"#
        );
        assert_eq!(
            error("/a\nb"),
            r#"parse "/a\nb": net/url: invalid control character in URL"#
        );
        assert_eq!(
            error("/x#%zz"),
            r#"parse "/x#%zz": invalid URL escape "%zz""#
        );
        assert_eq!(
            error("http://a<b@h/"),
            r#"parse "http://a<b@h/": net/url: invalid userinfo"#
        );
    }
}
