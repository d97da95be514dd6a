//! Go's percent-decoding, path cleaning and path escaping, as kube-apiserver applies them to
//! proxy paths and queries.

use std::borrow::Cow;

/// Go's `unescape(s, encodePath)`: `%XX` becomes the byte; any other `%` is an error.
pub(super) fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.iter().position(|b| *b == b'%') {
        out.extend_from_slice(&rest[..at]);
        let hi = hex_value(*rest.get(at + 1)?)?;
        let lo = hex_value(*rest.get(at + 2)?)?;
        out.push(hi << 4 | lo);
        rest = &rest[at + 3..];
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// Whether every `%` in `raw` starts a valid `%XX` escape (what [`percent_decode`] accepts).
pub(super) fn valid_escapes(raw: &[u8]) -> bool {
    let mut i = 0;
    while let Some(at) = raw[i..].iter().position(|b| *b == b'%') {
        let at = i + at;
        match (raw.get(at + 1), raw.get(at + 2)) {
            (Some(&hi), Some(&lo)) if hex_value(hi).is_some() && hex_value(lo).is_some() => {
                i = at + 3;
            }
            _ => return false,
        }
    }
    true
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Go's `QueryUnescape` (`+` is a space), or `None` on a bad escape.
fn query_unescape(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !raw.iter().any(|b| *b == b'%' || *b == b'+') {
        return Some(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let hi = hex_value(*raw.get(i + 1)?)?;
                let lo = hex_value(*raw.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(Cow::Owned(out))
}

/// Whether Go's `url.Query()` of this raw query has a `dryRun` key.
pub(super) fn has_dry_run(query: &str) -> bool {
    // Fast path: a key only unescapes to `dryRun` if it holds it literally or uses `%`.
    if !query.contains("dryRun") && !query.contains('%') {
        return false;
    }
    query.split('&').any(|pair| {
        if pair.is_empty() || pair.contains(';') {
            return false;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Go drops a pair whose key or value fails to unescape.
        matches!(query_unescape(key.as_bytes()), Some(k) if &*k == b"dryRun")
            && query_unescape(value.as_bytes()).is_some()
    })
}

/// kube-apiserver's `JoinPreservingTrailingSlash(a, b)`: Go's `path.Join` (join the
/// non-empty elements with `/` and clean; `""` when both are empty), plus a trailing `/` when
/// the last non-empty element ends with one.
///
/// ```
/// use kube_bastion_core::path::join_preserving_trailing_slash as join;
///
/// assert_eq!(join("", ""), "");
/// assert_eq!(join("/foo/", "/foo/"), "/foo/foo/");
/// assert_eq!(join("", "/a/../b/"), "/b/");
/// assert_eq!(join("", "/../../etc/passwd"), "/etc/passwd");
/// ```
pub fn join_preserving_trailing_slash(a: &str, b: &str) -> String {
    let mut joined = Vec::with_capacity(a.len() + b.len() + 2);
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return String::new(),
        (false, true) => joined.extend_from_slice(a.as_bytes()),
        (true, false) => joined.extend_from_slice(b.as_bytes()),
        (false, false) => {
            joined.extend_from_slice(a.as_bytes());
            joined.push(b'/');
            joined.extend_from_slice(b.as_bytes());
        }
    }
    crate::go::clean_in_place(&mut joined);
    let last = if b.is_empty() { a } else { b };
    if last.ends_with('/') && !joined.ends_with(b"/") {
        joined.push(b'/');
    }
    // Cleaning removes whole segments and ASCII separators only, so UTF-8 is preserved.
    String::from_utf8(joined).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Bytes Go's `url.PathEscape`-style path encoding (`escape(s, encodePath)`) keeps:
/// `A-Za-z0-9-_.~` and `$&+,/:;=@`.
const fn path_safe_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'~'
                    | b'$'
                    | b'&'
                    | b'+'
                    | b','
                    | b'/'
                    | b':'
                    | b';'
                    | b'='
                    | b'@'
            );
        i += 1;
    }
    t
}

pub(super) static PATH_SAFE: [bool; 256] = path_safe_table();
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Appends a decoded path encoded as Go encodes `URL.Path` for the wire (`EscapedPath`):
/// every byte but `A-Za-z0-9-_.~` and `$&+,/:;=@` becomes `%XX` (upper-case hex). So `(`
/// is `%28`, a space `%20`, `%` itself `%25`.
///
/// ```
/// let mut out = String::new();
/// kube_bastion_core::path::escape_path(b"/a b(c)/%2F", &mut out);
/// assert_eq!(out, "/a%20b%28c%29/%252F");
/// ```
pub fn escape_path(decoded: &[u8], out: &mut String) {
    let mut bytes = std::mem::take(out).into_bytes();
    escape_path_bytes(decoded, &mut bytes);
    *out = ascii_string(bytes);
}

/// [`escape_path`] into bytes.
pub(super) fn escape_path_bytes(decoded: &[u8], out: &mut Vec<u8>) {
    encode_runs(out, decoded, &PATH_SAFE);
}

/// Appends `bytes`, percent-encoding (upper-case hex) every byte the `keep` table refuses;
/// runs of kept bytes are copied at once.
fn encode_runs(out: &mut Vec<u8>, bytes: &[u8], keep: &[bool; 256]) {
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|&b| !keep[usize::from(b)]) {
        let b = rest[i];
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(&[
            b'%',
            HEX_UPPER[usize::from(b >> 4)],
            HEX_UPPER[usize::from(b & 0xF)],
        ]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

/// Appends `s`, percent-encoding (upper-case hex) every byte the `keep` table refuses.
pub(super) fn push_escaped(out: &mut String, s: &str, keep: &[bool; 256]) {
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(at) = bytes[start..].iter().position(|&b| !keep[usize::from(b)]) {
        let at = start + at;
        // A non-empty run ends before a refused byte and starts after one, both at ASCII
        // positions, so it is on character boundaries.
        out.push_str(s.get(start..at).unwrap_or_default());
        let b = bytes[at];
        out.push('%');
        out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
        out.push(char::from(HEX_UPPER[usize::from(b & 0xF)]));
        start = at + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
}

/// Whether Go's `path.Clean` leaves the rooted path `p` as it is, a trailing `/` aside (which
/// `JoinPreservingTrailingSlash` puts back): no empty segment but a last one, no `.` or `..`.
pub(super) fn is_clean(p: &[u8]) -> bool {
    let Some(segments) = p.strip_prefix(b"/") else {
        return p.is_empty();
    };
    let mut segments = segments.split(|b| *b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == b"." || segment == b".." {
            return false;
        }
    }
    true
}

/// Bytes that may be copied as is from a decoded path into a `Location` or
/// `X-Forwarded-Uri` value: visible ASCII except `%`, `?` and `#` (which would change the URL
/// when followed). Controls, space, DEL and non-ASCII are encoded.
const fn uri_safe_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0x21;
    while i < 0x7f {
        t[i] = !matches!(i as u8, b'%' | b'?' | b'#');
        i += 1;
    }
    t
}

const URI_SAFE_TABLE: [bool; 256] = uri_safe_table();
pub(super) static URI_SAFE: [bool; 256] = URI_SAFE_TABLE;

/// Bytes of a raw query kept byte for byte in a header value (`Location`): visible ASCII.
/// Controls, space, DEL and non-ASCII, which a header value cannot carry portably, are
/// percent-encoded.
const fn query_safe_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0x21;
    while i < 0x7f {
        t[i] = true;
        i += 1;
    }
    t
}

pub(super) static QUERY_SAFE: [bool; 256] = query_safe_table();

/// Whether [`push_uri_safe_bytes`] would copy `bytes` unchanged.
pub(super) const fn is_uri_safe(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if !URI_SAFE_TABLE[bytes[i] as usize] {
            return false;
        }
        i += 1;
    }
    true
}

/// Decoded bytes into a `Location` or `X-Forwarded-Uri` value (see [`uri_safe_table`]).
pub(super) fn push_uri_safe_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    encode_runs(out, bytes, &URI_SAFE);
}

/// Bytes built only from ASCII (or UTF-8 pieces) into a String.
pub(super) fn ascii_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
