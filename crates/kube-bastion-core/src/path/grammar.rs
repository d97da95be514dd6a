//! The proxy path grammar: the byte classes of segments and the split of a raw path into
//! `/api/v1/[namespaces/<ns>/]<kind>/<id>/proxy[/<rest>]`.

use super::ResourceKind;
use super::encoding::is_uri_safe;

pub(super) const API_V1: &[u8] = b"/api/v1/";

/// Where the parts of a proxy route are in the decoded path.
pub(super) struct Grammar {
    pub(super) kind: ResourceKind,
    pub(super) namespace: Option<(usize, usize)>,
    pub(super) id: (usize, usize),
    pub(super) prefix_end: usize,
    /// `PERCENT` and `NOT_URI_SAFE` bits seen in the namespace and id.
    pub(super) classes: u8,
}

impl Grammar {
    /// Whether the namespace or id holds a `%`.
    pub(super) fn escaped(&self) -> bool {
        self.classes & PERCENT != 0
    }

    /// Whether the namespace and id can be copied into a header value (see `is_uri_safe`).
    pub(super) fn uri_safe(&self) -> bool {
        self.classes & NOT_URI_SAFE == 0
    }
}

pub(super) const SLASH: u8 = 1;
pub(super) const PERCENT: u8 = 2;
pub(super) const NOT_URI_SAFE: u8 = 4;

/// Byte classes for the one scan of the namespace and id segments.
pub(super) const fn segment_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if is_uri_safe(&[i as u8]) {
            0
        } else {
            NOT_URI_SAFE
        };
        i += 1;
    }
    t[b'/' as usize] = SLASH;
    t[b'%' as usize] |= PERCENT;
    t
}

static SEGMENT_CLASSES: [u8; 256] = segment_classes();

/// The index in `raw` (a path with valid escapes) where the first `decoded_len` decoded
/// bytes end.
pub(super) fn raw_offset(raw: &[u8], decoded_len: usize) -> usize {
    let mut i = 0;
    for _ in 0..decoded_len {
        i += if raw.get(i) == Some(&b'%') { 3 } else { 1 };
    }
    i
}

/// Matches the decoded path against the three proxy route forms. Only the namespace and id
/// are scanned; the fixed words are compared in place.
pub(super) fn parse_grammar(path: &[u8]) -> Option<Grammar> {
    let tail = path.strip_prefix(API_V1)?;
    let mut classes = 0;
    let (kind, namespace, id_start) = if tail.starts_with(b"nodes/") {
        (ResourceKind::Node, None, API_V1.len() + b"nodes/".len())
    } else if tail.starts_with(b"namespaces/") {
        let ns_start = API_V1.len() + b"namespaces/".len();
        let (ns_end, ns_classes) = segment(path, ns_start)?;
        classes = ns_classes;
        let words = &path[ns_end + 1..];
        let (kind, word) = if words.starts_with(b"pods/") {
            (ResourceKind::Pod, "pods/".len())
        } else if words.starts_with(b"services/") {
            (ResourceKind::Service, "services/".len())
        } else {
            return None;
        };
        (kind, Some((ns_start, ns_end)), ns_end + 1 + word)
    } else {
        return None;
    };
    let (id_end, id_classes) = segment(path, id_start)?;
    let prefix_end = id_end + "/proxy".len();
    if path.get(id_end + 1..prefix_end)? != b"proxy"
        || path.get(prefix_end).is_some_and(|b| *b != b'/')
    {
        return None;
    }
    Some(Grammar {
        kind,
        namespace,
        id: (id_start, id_end),
        prefix_end,
        classes: classes | id_classes,
    })
}

/// The index of the `/` ending the non-empty segment that starts at `start`, and the byte
/// classes seen in the segment.
pub(super) fn segment(path: &[u8], start: usize) -> Option<(usize, u8)> {
    let mut classes = 0;
    for (i, &b) in path.get(start..)?.iter().enumerate() {
        let class = SEGMENT_CLASSES[usize::from(b)];
        if class & SLASH != 0 {
            return (i > 0).then_some((start + i, classes));
        }
        classes |= class;
    }
    None
}

pub(super) fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len()
        && haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

pub(super) fn trim_trailing_slashes(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|b| *b != b'/').map_or(0, |i| i + 1);
    &bytes[..end]
}

/// Upstream's `strings.TrimSuffix(requestPath, backendPath)` over the request path
/// `prefix + rest`, returned as up to two pieces to avoid a copy.
pub(super) fn strip_suffix<'a>(prefix: &'a str, rest: &'a [u8], suffix: &[u8]) -> [&'a [u8]; 2] {
    let prefix = prefix.as_bytes();
    let total = prefix.len() + rest.len();
    if suffix.is_empty() || suffix.len() > total {
        return [prefix, rest];
    }
    let keep = total - suffix.len();
    let matches = if keep >= prefix.len() {
        &rest[keep - prefix.len()..] == suffix
    } else {
        let split = prefix.len() - keep;
        prefix[keep..] == suffix[..split] && rest == &suffix[split..]
    };
    match (matches, keep >= prefix.len()) {
        (false, _) => [prefix, rest],
        (true, true) => [prefix, &rest[..keep - prefix.len()]],
        (true, false) => [&prefix[..keep], &[]],
    }
}
