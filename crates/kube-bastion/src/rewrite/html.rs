//! The streaming HTML link rewriter: kube-apiserver's 25 tag/attribute pairs (plus, as an
//! option, `srcset` candidates and `<meta http-equiv="refresh">` targets) on top of
//! `lol_html`'s `Send` rewriter.
//!
//! Upstream tokenizes the page and re-serializes every start tag. We only touch the attribute
//! values we change; everything else keeps its source bytes. A rewritten value is written the
//! way Go's `html.EscapeString` writes it (`&amp;`, `&#39;`, `&lt;`, `&gt;`, `&#34;`, `&#13;`),
//! so a rewritten attribute reads the same as upstream's.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use lol_html::errors::RewritingError;
use lol_html::send::{ElementContentHandlers, HtmlRewriter, Settings};
use lol_html::{MemorySettings, OutputSink, Selector};

use super::UrlRules;

/// Tag → URL attributes rewritten by kube-apiserver (`atomsToAttrs` in apimachinery).
pub(crate) const URL_ATTRIBUTES: [(&str, &[&str]); 25] = [
    ("a", &["href"]),
    ("applet", &["codebase"]),
    ("area", &["href"]),
    ("audio", &["src"]),
    ("base", &["href"]),
    ("blockquote", &["cite"]),
    ("body", &["background"]),
    ("button", &["formaction"]),
    ("command", &["icon"]),
    ("del", &["cite"]),
    ("embed", &["src"]),
    ("form", &["action"]),
    ("frame", &["longdesc", "src"]),
    ("head", &["profile"]),
    ("html", &["manifest"]),
    ("iframe", &["longdesc", "src"]),
    ("img", &["longdesc", "src", "usemap"]),
    ("input", &["src", "usemap", "formaction"]),
    ("ins", &["cite"]),
    ("link", &["href"]),
    ("object", &["classid", "codebase", "data", "usemap"]),
    ("q", &["cite"]),
    ("script", &["src"]),
    ("source", &["src"]),
    ("video", &["poster", "src"]),
];

/// The rewriter's output buffer, shared with the body that drains it.
#[derive(Clone, Debug, Default)]
pub(crate) struct SharedOutput(Arc<Mutex<Vec<u8>>>);

impl SharedOutput {
    /// Takes everything written so far.
    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Bytes currently held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl OutputSink for SharedOutput {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        if !chunk.is_empty() {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(chunk);
        }
    }
}

/// The `Send` lol_html rewriter writing into a [`SharedOutput`].
pub(crate) type Rewriter = HtmlRewriter<'static, SharedOutput>;

/// Builds a rewriter for one response.
pub(crate) fn rewriter(
    rules: &Arc<UrlRules>,
    extras: bool,
    memory_limit: usize,
    output: SharedOutput,
) -> Rewriter {
    let mut settings = Settings::new_send()
        .with_strict(false)
        .with_memory_settings(
            MemorySettings::new()
                .with_max_allowed_memory_usage(memory_limit)
                .with_graceful_bail_out_on_memory_limit_exceeded(true),
        );
    let rules = Arc::clone(rules);
    // One handler on `*` that looks the tag up in `URL_ATTRIBUTES`, rather than a selector
    // list of the 25 tags (which lol_html tries one by one on every start tag): about the
    // same cost in `benches/rewrite.rs`, one handler call per element, and the table stays
    // the only list of tags.
    let handler = move |el: &mut lol_html::send::Element<'_, '_>| {
        let tag = el.tag_name();
        if let Some(attributes) = url_attributes(&tag) {
            for name in attributes {
                rewrite_attribute(el, name, |value| rules.rewrite_str(value));
            }
        }
        if extras {
            match tag.as_str() {
                "img" | "source" => rewrite_attribute(el, "srcset", |value| {
                    rewrite_srcset(&rules, value).map(Cow::Owned)
                }),
                "meta" => {
                    let is_refresh = el
                        .get_attribute("http-equiv")
                        .is_some_and(|v| v.trim().eq_ignore_ascii_case("refresh"));
                    if is_refresh {
                        rewrite_attribute(el, "content", |value| {
                            rewrite_refresh(&rules, value).map(Cow::Owned)
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    };
    settings = settings.append_element_content_handler((
        Cow::Borrowed(&*ANY_ELEMENT),
        ElementContentHandlers::default().element(handler),
    ));
    HtmlRewriter::new(settings, output)
}

/// The URL attributes of a (lowercase) tag name: [`URL_ATTRIBUTES`] as a lookup.
fn url_attributes(tag: &str) -> Option<&'static [&'static str]> {
    // Sorted by tag name, so a binary search finds the entry.
    URL_ATTRIBUTES
        .binary_search_by(|(t, _)| (*t).cmp(tag))
        .ok()
        .map(|i| URL_ATTRIBUTES[i].1)
}

/// The `*` selector (parsed once per process).
static ANY_ELEMENT: LazyLock<Selector> = LazyLock::new(|| selector("*"));

fn selector(source: &str) -> Selector {
    // The selectors are constants of this module; a parse failure is a programming error
    // caught by the unit tests, never by input.
    #[allow(clippy::expect_used)]
    source.parse().expect("static selector parses")
}

/// Whether an error is lol_html's graceful memory bail-out (the rewriter has flushed its
/// pending input unchanged and must not be used again).
pub(crate) fn is_memory_bail_out(error: &RewritingError) -> bool {
    matches!(error, RewritingError::MemoryLimitExceeded(_))
}

/// Rewrites one attribute value in place when `rewrite` changes it.
fn rewrite_attribute(
    el: &mut lol_html::send::Element<'_, '_>,
    name: &str,
    rewrite: impl FnOnce(&str) -> Option<Cow<'_, str>>,
) {
    let Some(raw) = el.get_attribute(name) else {
        return;
    };
    let Some(decoded) = decode_attribute(&raw) else {
        return;
    };
    let Some(rewritten) = rewrite(&decoded) else {
        return;
    };
    if *rewritten != *decoded {
        // The name comes from the tables above and is always valid.
        let _ = el.set_attribute(name, &escape_attribute(&rewritten));
    }
}

/// Rewrites every URL of a `srcset` list (HTML "parse a srcset attribute"), keeping
/// descriptors, commas and whitespace as they are.
pub(crate) fn rewrite_srcset(rules: &UrlRules, value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len() + 64);
    let mut copied = 0;
    let mut i = 0;
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\x0c' | b'\r');
    while i < bytes.len() {
        while i < bytes.len() && (is_space(bytes[i]) || bytes[i] == b',') {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && !is_space(bytes[i]) {
            i += 1;
        }
        let mut end = i;
        let trailing_commas = bytes[start..end]
            .iter()
            .rev()
            .take_while(|&&c| c == b',')
            .count();
        end -= trailing_commas;
        if trailing_commas == 0 {
            // Descriptors run to the next comma outside parentheses.
            let mut in_parens = false;
            while i < bytes.len() {
                match bytes[i] {
                    b'(' => in_parens = true,
                    b')' => in_parens = false,
                    b',' if !in_parens => break,
                    _ => {}
                }
                i += 1;
            }
        }
        if end > start {
            let url = &value[start..end];
            if let Some(new) = rules.rewrite_str(url) {
                out.push_str(&value[copied..start]);
                out.push_str(&new);
                copied = end;
            }
        }
    }
    out.push_str(&value[copied..]);
    Some(out)
}

/// Rewrites the URL of a refresh value (`N; url=/x`, `N, '/x'`, `N; /x`) as the HTML
/// "shared declarative refresh steps" find it. Values without a URL are unchanged.
pub(crate) fn rewrite_refresh(rules: &UrlRules, value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\x0c' | b'\r');
    let mut i = 0;
    while i < bytes.len() && is_space(bytes[i]) {
        i += 1;
    }
    let digits_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    if i == digits_start && bytes.get(i) != Some(&b'.') {
        return None;
    }
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
        i += 1;
    }
    if i >= bytes.len() {
        return None;
    }
    if !(is_space(bytes[i]) || bytes[i] == b';' || bytes[i] == b',') {
        return None;
    }
    while i < bytes.len() && is_space(bytes[i]) {
        i += 1;
    }
    if i < bytes.len() && (bytes[i] == b';' || bytes[i] == b',') {
        i += 1;
    }
    while i < bytes.len() && is_space(bytes[i]) {
        i += 1;
    }
    if bytes.len() >= i + 3 && bytes[i..i + 3].eq_ignore_ascii_case(b"url") {
        let mut j = i + 3;
        while j < bytes.len() && is_space(bytes[j]) {
            j += 1;
        }
        if j < bytes.len() && bytes[j] == b'=' {
            j += 1;
            while j < bytes.len() && is_space(bytes[j]) {
                j += 1;
            }
            i = j;
        }
    }
    let (start, end) = match bytes.get(i) {
        Some(&q @ (b'"' | b'\'')) => {
            let start = i + 1;
            let end = bytes[start..]
                .iter()
                .position(|&c| c == q)
                .map_or(bytes.len(), |p| start + p);
            (start, end)
        }
        _ => {
            let mut end = bytes.len();
            while end > i && is_space(bytes[end - 1]) {
                end -= 1;
            }
            (i, end)
        }
    };
    if start >= end {
        return None;
    }
    let new = rules.rewrite_str(&value[start..end])?;
    Some(format!("{}{}{}", &value[..start], new, &value[end..]))
}

/// Go's `html.EscapeString` as used by `Token.String()` for attribute values.
pub(crate) fn escape_attribute(value: &str) -> Cow<'_, str> {
    let special = |c: u8| matches!(c, b'&' | b'\'' | b'<' | b'>' | b'"' | b'\r');
    let Some(first) = value.bytes().position(special) else {
        return Cow::Borrowed(value);
    };
    let mut out = String::with_capacity(value.len() + 8);
    out.push_str(&value[..first]);
    for c in value[first..].chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The legacy named references that also work without `;`: Latin-1 U+00A0..U+00FF in order.
const LATIN1_NAMES: [&str; 96] = [
    "nbsp", "iexcl", "cent", "pound", "curren", "yen", "brvbar", "sect", "uml", "copy", "ordf",
    "laquo", "not", "shy", "reg", "macr", "deg", "plusmn", "sup2", "sup3", "acute", "micro",
    "para", "middot", "cedil", "sup1", "ordm", "raquo", "frac14", "frac12", "frac34", "iquest",
    "Agrave", "Aacute", "Acirc", "Atilde", "Auml", "Aring", "AElig", "Ccedil", "Egrave", "Eacute",
    "Ecirc", "Euml", "Igrave", "Iacute", "Icirc", "Iuml", "ETH", "Ntilde", "Ograve", "Oacute",
    "Ocirc", "Otilde", "Ouml", "times", "Oslash", "Ugrave", "Uacute", "Ucirc", "Uuml", "Yacute",
    "THORN", "szlig", "agrave", "aacute", "acirc", "atilde", "auml", "aring", "aelig", "ccedil",
    "egrave", "eacute", "ecirc", "euml", "igrave", "iacute", "icirc", "iuml", "eth", "ntilde",
    "ograve", "oacute", "ocirc", "otilde", "ouml", "divide", "oslash", "ugrave", "uacute", "ucirc",
    "uuml", "yacute", "thorn", "yuml",
];

fn legacy_entity(name: &str) -> Option<char> {
    match name {
        "amp" | "AMP" => Some('&'),
        "lt" | "LT" => Some('<'),
        "gt" | "GT" => Some('>'),
        "quot" | "QUOT" => Some('"'),
        "COPY" => Some('\u{a9}'),
        "REG" => Some('\u{ae}'),
        _ => LATIN1_NAMES
            .iter()
            .position(|&n| n == name)
            .and_then(|i| char::from_u32(0xa0 + i as u32)),
    }
}

/// Windows-1252 replacements for numeric references to U+0080..U+009F.
const C1_REPLACEMENTS: [u32; 32] = [
    0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x8D, 0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
];

/// Decodes character references in an attribute value the way Go's tokenizer does.
///
/// Numeric references and the legacy named references (which are the only ones valid without
/// `;`) are decoded exactly. A `;`-terminated name outside that set returns `None`: the value
/// is then left untouched rather than risk changing what a browser reads.
pub(crate) fn decode_attribute(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('&') {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    let mut copied = 0;
    while let Some(offset) = raw[i..].find('&') {
        let amp = i + offset;
        out.push_str(&raw[copied..amp]);
        let rest = &bytes[amp + 1..];
        if rest.first() == Some(&b'#') {
            let (hex, digits_start) = match rest.get(1) {
                Some(b'x' | b'X') => (true, 2),
                _ => (false, 1),
            };
            let digits = rest[digits_start..]
                .iter()
                .take_while(|c| {
                    if hex {
                        c.is_ascii_hexdigit()
                    } else {
                        c.is_ascii_digit()
                    }
                })
                .count();
            if digits == 0 {
                out.push('&');
                copied = amp + 1;
                i = amp + 1;
                continue;
            }
            let text = &raw[amp + 1 + digits_start..amp + 1 + digits_start + digits];
            let value = u32::from_str_radix(text, if hex { 16 } else { 10 }).unwrap_or(u32::MAX);
            let ch = match value {
                0x80..=0x9f => char::from_u32(C1_REPLACEMENTS[(value - 0x80) as usize]),
                0 | 0xd800..=0xdfff => None,
                v => char::from_u32(v),
            };
            out.push(ch.unwrap_or('\u{fffd}'));
            let mut end = amp + 1 + digits_start + digits;
            if bytes.get(end) == Some(&b';') {
                end += 1;
            }
            copied = end;
            i = end;
            continue;
        }
        let name_len = rest
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric())
            .count();
        let name = &raw[amp + 1..amp + 1 + name_len];
        let after = rest.get(name_len).copied();
        if name_len == 0 {
            out.push('&');
            copied = amp + 1;
            i = amp + 1;
            continue;
        }
        if after == Some(b';') {
            let ch = match name {
                "apos" => Some('\''),
                other => legacy_entity(other),
            };
            let ch = ch?;
            out.push(ch);
            copied = amp + 1 + name_len + 1;
        } else if after != Some(b'=') && legacy_entity(name).is_some() {
            out.push(legacy_entity(name).unwrap_or('&'));
            copied = amp + 1 + name_len;
        } else {
            out.push_str(&raw[amp..amp + 1 + name_len]);
            copied = amp + 1 + name_len;
        }
        i = copied;
    }
    out.push_str(&raw[copied..]);
    Some(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> UrlRules {
        UrlRules::new("/p", "10.1.2.3:8080", "apiserver:6443")
    }

    #[test]
    fn decodes_like_go_attributes() {
        let d = |s: &str| decode_attribute(s).map(|c| c.into_owned());
        assert_eq!(d("/a?x=1&amp;y=2").as_deref(), Some("/a?x=1&y=2"));
        assert_eq!(d("/a?x=1&y=2").as_deref(), Some("/a?x=1&y=2"));
        assert_eq!(d("&#47;x&#x2F;").as_deref(), Some("/x/"));
        assert_eq!(d("a&amp=1").as_deref(), Some("a&amp=1"));
        assert_eq!(d("a&amp b").as_deref(), Some("a& b"));
        assert_eq!(d("&copy;&not").as_deref(), Some("\u{a9}\u{ac}"));
        assert_eq!(d("&#128;&#0;").as_deref(), Some("\u{20ac}\u{fffd}"));
        assert_eq!(d("&hellip;"), None);
        assert_eq!(d("&hellip").as_deref(), Some("&hellip"));
        assert_eq!(d("& &# &#x").as_deref(), Some("& &# &#x"));
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(
            escape_attribute("a&b'c\"d<e>\r"),
            "a&amp;b&#39;c&#34;d&lt;e&gt;&#13;"
        );
    }

    #[test]
    fn srcset_candidates() {
        let r = rules();
        assert_eq!(
            rewrite_srcset(&r, "/a.png 1x, b.png 2x,/c.png").as_deref(),
            Some("/p/a.png 1x, b.png 2x,/p/c.png")
        );
        assert_eq!(
            rewrite_srcset(&r, " /a,, /b (x, y) 2w").as_deref(),
            Some(" /p/a,, /p/b (x, y) 2w")
        );
    }

    #[test]
    fn refresh_targets() {
        let r = rules();
        let f = |s: &str| rewrite_refresh(&r, s);
        assert_eq!(f("5; url=/x").as_deref(), Some("5; url=/p/x"));
        assert_eq!(f("0;URL='/x?a=1' ").as_deref(), Some("0;URL='/p/x?a=1' "));
        assert_eq!(f("1, /y").as_deref(), Some("1, /p/y"));
        assert_eq!(f("3").as_deref(), None);
        assert_eq!(f("soon; url=/x").as_deref(), None);
        assert_eq!(
            f("2; url=http://example.com/").as_deref(),
            Some("2; url=http://example.com/")
        );
    }

    #[test]
    fn all_selectors_parse() {
        let _ = selector("*");
        let _ = rewriter(&Arc::new(rules()), true, 1 << 20, SharedOutput::default());
    }

    #[test]
    fn url_attributes_are_found_by_tag() {
        assert!(URL_ATTRIBUTES.windows(2).all(|w| w[0].0 < w[1].0));
        for (tag, attributes) in URL_ATTRIBUTES {
            assert_eq!(url_attributes(tag), Some(attributes));
        }
        for tag in ["", "A", "p", "div", "imgx", "im", "zzz", "meta"] {
            assert_eq!(url_attributes(tag), None);
        }
    }
}
