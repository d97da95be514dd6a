//! Go-compatible string helpers: `strconv.Quote`, `path.Clean` and `path.Join`, and
//! `net/url`'s percent escaping and unescaping in its modes. The path grammar, the error
//! messages and the response rewriter all reproduce Go's output byte for byte, and all of
//! them use these.
//!
//! ```
//! use kube_bastion_core::go;
//!
//! assert_eq!(go::quote("web:8080"), r#""web:8080""#);
//! assert_eq!(go::quote(b"a\"b\n\xff"), r#""a\"b\n\xff""#);
//! assert_eq!(go::clean(b"/a/../b//c/."), b"/b/c");
//! assert_eq!(go::join(b"/prefix", b"/x/"), b"/prefix/x");
//! assert_eq!(go::escape(b"/a b?", go::EscapeMode::Path), b"/a%20b%3F");
//! ```

use std::fmt::Write as _;

/// Go's `strconv.Quote`: a double-quoted string with Go's escapes; bytes that are not UTF-8
/// are written `\xNN`, as Go writes them.
pub fn quote(value: impl AsRef<[u8]>) -> String {
    let value = value.as_ref();
    let mut out = String::with_capacity(value.len() + 2);
    push_quoted(value, &mut out);
    out
}

/// [`quote`] appending to `out`.
pub fn push_quoted(value: &[u8], out: &mut String) {
    out.push('"');
    for chunk in value.utf8_chunks() {
        push_quoted_chars(chunk.valid(), out);
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
}

fn push_quoted_chars(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_ascii() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if is_go_printable(c) => out.push(c),
            c if u32::from(c) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
}

/// Go's `unicode.IsPrint` for a non-ASCII character: not in the categories Cc, Cf, Cs, Co,
/// Cn, Zs, Zl or Zp. The standard library's `str::escape_debug` escapes exactly those
/// characters after the first one (grapheme extenders are only escaped in first position),
/// so it serves as the category table.
fn is_go_printable(c: char) -> bool {
    let mut buf = [0u8; 5];
    buf[0] = b'a';
    let len = 1 + c.encode_utf8(&mut buf[1..]).len();
    std::str::from_utf8(&buf[..len]).is_ok_and(|s| s.escape_debug().nth(1) == Some(c))
}

/// Go's `path.Clean` over a byte buffer, in place (the write index never passes the read
/// index). An empty result becomes `.`, as in Go.
pub fn clean_in_place(buf: &mut Vec<u8>) {
    let n = buf.len();
    if n == 0 {
        buf.push(b'.');
        return;
    }
    let rooted = buf[0] == b'/';
    let (mut r, mut w, mut dotdot) = (0, 0, 0);
    if rooted {
        // buf[0] is already '/'.
        (r, w, dotdot) = (1, 1, 1);
    }
    while r < n {
        if buf[r] == b'/' || (buf[r] == b'.' && (r + 1 == n || buf[r + 1] == b'/')) {
            // An empty or `.` segment.
            r += 1;
        } else if buf[r] == b'.'
            && buf.get(r + 1) == Some(&b'.')
            && (r + 2 == n || buf[r + 2] == b'/')
        {
            r += 2;
            if w > dotdot {
                w -= 1;
                while w > dotdot && buf[w] != b'/' {
                    w -= 1;
                }
            } else if !rooted {
                if w > 0 {
                    buf[w] = b'/';
                    w += 1;
                }
                buf[w] = b'.';
                buf[w + 1] = b'.';
                w += 2;
                dotdot = w;
            }
        } else {
            if (rooted && w != 1) || (!rooted && w != 0) {
                buf[w] = b'/';
                w += 1;
            }
            while r < n && buf[r] != b'/' {
                buf[w] = buf[r];
                w += 1;
                r += 1;
            }
        }
    }
    if w == 0 {
        buf.clear();
        buf.push(b'.');
    } else {
        buf.truncate(w);
    }
}

/// Go's `path.Clean`.
pub fn clean(path: &[u8]) -> Vec<u8> {
    let mut buf = path.to_vec();
    clean_in_place(&mut buf);
    buf
}

/// Go's `path.Join(a, b)`.
pub fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Vec::new(),
        (true, false) => clean(b),
        (false, true) => clean(a),
        (false, false) => {
            let mut joined = Vec::with_capacity(a.len() + b.len() + 1);
            joined.extend_from_slice(a);
            joined.push(b'/');
            joined.extend_from_slice(b);
            clean(&joined)
        }
    }
}

/// Which URL component a byte string belongs to; selects Go's escaping table (`net/url`'s
/// `encoding` modes; the query modes are not needed here).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EscapeMode {
    /// `encodePath`.
    Path,
    /// `encodeHost`.
    Host,
    /// `encodeZone`.
    Zone,
    /// `encodeUserPassword`.
    UserPassword,
    /// `encodeFragment`.
    Fragment,
}

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

fn unhex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// Go's `shouldEscape`.
pub fn should_escape(c: u8, mode: EscapeMode) -> bool {
    if c.is_ascii_alphanumeric() {
        return false;
    }
    if matches!(mode, EscapeMode::Host | EscapeMode::Zone)
        && (is_sub_delim(c) || matches!(c, b':' | b'[' | b']' | b'<' | b'>' | b'"'))
    {
        return false;
    }
    match c {
        b'-' | b'_' | b'.' | b'~' => return false,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' => {
            return match mode {
                EscapeMode::Path => c == b'?',
                EscapeMode::UserPassword => matches!(c, b'@' | b'/' | b'?' | b':'),
                EscapeMode::Fragment => false,
                // Host and zone fall through to "escape everything else".
                EscapeMode::Host | EscapeMode::Zone => true,
            };
        }
        _ => {}
    }
    if mode == EscapeMode::Fragment && matches!(c, b'!' | b'(' | b')' | b'*') {
        return false;
    }
    true
}

/// Go's `validEncoded`.
pub fn valid_encoded(s: &[u8], mode: EscapeMode) -> bool {
    s.iter().all(|&c| {
        is_sub_delim(c) || matches!(c, b':' | b'@' | b'[' | b']' | b'%') || !should_escape(c, mode)
    })
}

/// RFC 3986 `sub-delims`: `!$&'()*+,;=`.
pub fn is_sub_delim(c: u8) -> bool {
    matches!(
        c,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// Go's `escape` for every mode but the query ones.
pub fn escape(s: &[u8], mode: EscapeMode) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(s.len());
    for &c in s {
        if should_escape(c, mode) {
            out.push(b'%');
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 15)]);
        } else {
            out.push(c);
        }
    }
    out
}

/// Go's `unescape` for every mode but the query ones (so `+` is literal); errors carry Go's
/// text (`invalid URL escape "%zz"`).
pub fn unescape(s: &[u8], mode: EscapeMode) -> Result<Vec<u8>, String> {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                if i + 2 >= s.len() || !is_hex(s[i + 1]) || !is_hex(s[i + 2]) {
                    let end = (i + 3).min(s.len());
                    return Err(format!("invalid URL escape {}", quote(&s[i..end])));
                }
                let escaped = &s[i..i + 3];
                if mode == EscapeMode::Host && unhex(s[i + 1]) < 8 && escaped != b"%25" {
                    return Err(format!("invalid URL escape {}", quote(escaped)));
                }
                if mode == EscapeMode::Zone {
                    let v = (unhex(s[i + 1]) << 4) | unhex(s[i + 2]);
                    if escaped != b"%25" && v != b' ' && should_escape(v, EscapeMode::Host) {
                        return Err(format!("invalid URL escape {}", quote(escaped)));
                    }
                }
                i += 3;
            }
            c => {
                if matches!(mode, EscapeMode::Host | EscapeMode::Zone)
                    && c < 0x80
                    && should_escape(c, mode)
                {
                    return Err(format!(
                        "invalid character {} in host name",
                        quote(&s[i..i + 1])
                    ));
                }
                i += 1;
            }
        }
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            out.push((unhex(s[i + 1]) << 4) | unhex(s[i + 2]));
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_clean_and_join() {
        assert_eq!(clean(b"/a/../b//c"), b"/b/c");
        assert_eq!(clean(b"/../../etc/passwd"), b"/etc/passwd");
        assert_eq!(clean(b"a/../../b"), b"../b");
        assert_eq!(clean(b"../../x/.."), b"../..");
        assert_eq!(clean(b"./"), b".");
        assert_eq!(join(b"/p", b"/x/"), b"/p/x");
        assert_eq!(join(b"", b"/a//b"), b"/a/b");
        assert_eq!(join(b"/p", b"/"), b"/p");
    }

    #[test]
    fn quote_matches_strconv_quote_on_bytes() {
        assert_eq!(quote(b"a\xffb"), r#""a\xffb""#);
        assert_eq!(quote("\u{a0}"), r#""\u00a0""#);
        assert_eq!(quote("\u{7f}"), r#""\x7f""#);
        assert_eq!(quote("é\t"), r#""é\t""#);
    }
}
