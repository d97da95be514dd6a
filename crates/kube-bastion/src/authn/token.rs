//! kube-apiserver's static token file ([`TokenFile`], `--token-auth-file`) and the bearer
//! token of WebSocket clients ([`websocket_token`]).
//!
//! The token file keeps no token in memory: it keeps the SHA-256 digest of each, finds a
//! presented token by its digest and confirms the match with a constant-time comparison, so
//! neither a memory dump nor the time a lookup takes gives a token away.
//!
//! ```
//! use kube_bastion::TokenFile;
//!
//! let file = TokenFile::parse("s3cret,alice,1001,\"dev,ops\"\n").unwrap();
//! let alice = file.authenticate(b"Bearer s3cret").unwrap();
//! assert_eq!(alice.name, "alice");
//! assert_eq!(alice.groups, ["dev", "ops", "system:authenticated"]);
//! assert!(file.authenticate(b"Bearer guess").is_none());
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use subtle::ConstantTimeEq as _;

use super::{AuthenticateFuture, Authentication, Authenticator, UserInfo};

/// A token file that could not be read: the line and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", match .line { Some(line) => format!("line {line}: {}", .message), None => .message.clone() })]
pub struct TokenFileError {
    line: Option<usize>,
    message: String,
}

impl TokenFileError {
    fn at(line: usize, message: impl Into<String>) -> Self {
        TokenFileError {
            line: Some(line),
            message: message.into(),
        }
    }

    /// The 1-based line the error is on (`None` when the file could not be read at all).
    pub fn line(&self) -> Option<usize> {
        self.line
    }
}

/// The SHA-256 digest of a token.
type Digest = [u8; 32];

fn digest(token: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token).as_ref());
    out
}

/// kube-apiserver's static token file (`--token-auth-file`): CSV, one user per line,
/// `token,user,uid[,"group1,group2"]`; blank lines are skipped, a UTF-8 byte-order mark is
/// ignored, and a duplicate token keeps the later line (as upstream).
#[derive(Clone, Default)]
pub struct TokenFile {
    users: HashMap<Digest, UserInfo>,
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Users only: digests are not secrets, but there is no reason to print them.
        f.debug_struct("TokenFile")
            .field(
                "users",
                &self.users.values().map(|u| &u.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Splits one CSV line (RFC 4180 quoting, as Go's `encoding/csv` reads it).
fn csv_fields(line: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                    if chars.peek().is_some_and(|n| *n != ',') {
                        return Err("extraneous \" in field");
                    }
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            '"' => return Err("bare \" in non-quoted field"),
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
            }
            c => {
                field.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err("extraneous or missing \" in quoted field");
    }
    fields.push(field);
    Ok(fields)
}

impl TokenFile {
    /// Parses the file's text. Errors name the line.
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let record = csv_fields(line).map_err(|e| TokenFileError::at(number, e))?;
            if record.len() < 3 {
                return Err(TokenFileError::at(
                    number,
                    format!(
                        "must have at least 3 columns (token, user name, user uid), found {}",
                        record.len()
                    ),
                ));
            }
            if record[0].is_empty() {
                return Err(TokenFileError::at(number, "empty token"));
            }
            let mut groups: Vec<String> = record
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            groups.push("system:authenticated".to_owned());
            let user = UserInfo::new(record[1].clone(), record[2].clone(), groups);
            if users.insert(digest(record[0].as_bytes()), user).is_some() {
                tracing::warn!(
                    line = number,
                    "duplicate token in token file; the later line wins"
                );
            }
        }
        Ok(TokenFile { users })
    }

    /// Reads and parses a token file.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokenFileError {
            line: None,
            message: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no token.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user of a bearer token (the bytes after `Bearer `).
    pub fn user(&self, token: &[u8]) -> Option<&UserInfo> {
        if token.is_empty() {
            return None;
        }
        let presented = digest(token);
        // The map finds the entry by the digest; the comparison that decides is
        // constant-time, so the answer's timing says nothing about how close a guess was.
        let (stored, user) = self.users.get_key_value(&presented)?;
        bool::from(stored.ct_eq(&presented)).then_some(user)
    }

    /// The user of an `Authorization` header value, if it is `Bearer <known token>` (the
    /// scheme is case-insensitive, as upstream).
    pub fn authenticate(&self, authorization: &[u8]) -> Option<&UserInfo> {
        self.user(bearer_token(authorization)?)
    }
}

/// A bearer token (`Authorization: Bearer <token>`, or the WebSocket subprotocol entry when
/// there is no `Authorization`) is looked up in the file: a listed token is its user; an
/// unlisted one is [`Authentication::Invalid`] (`invalid bearer token`, as upstream: never
/// anonymous). Other `Authorization` schemes and requests without a token are
/// [`Authentication::NoCredentials`].
impl Authenticator for TokenFile {
    fn authenticate<'a>(&'a self, request: &'a http::request::Parts) -> AuthenticateFuture<'a> {
        AuthenticateFuture::ready(self.authenticate_head(&request.headers))
    }
}

impl TokenFile {
    fn authenticate_head(&self, headers: &http::HeaderMap) -> Authentication {
        let found = |user: Option<&UserInfo>| match user {
            Some(user) => Authentication::User(user.clone()),
            None => Authentication::Invalid("invalid bearer token".to_owned()),
        };
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            return match bearer_token(value.as_bytes()) {
                Some(token) => found(self.user(token)),
                None => Authentication::NoCredentials,
            };
        }
        match headers
            .get(http::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|value| websocket_token(value.as_bytes()))
        {
            Some((token, _)) => found(self.user(&token)),
            None => Authentication::NoCredentials,
        }
    }
}

/// The token of an `Authorization` value, as upstream's bearer-token authenticator reads it:
/// `Bearer <token>[ ...]`, the scheme case-insensitive; `None` for another scheme or an
/// empty token (no credential at all).
pub(crate) fn bearer_token(authorization: &[u8]) -> Option<&[u8]> {
    let mut parts = authorization.splitn(3, |b| *b == b' ');
    let scheme = parts.next()?;
    let token = parts.next().filter(|t| !t.is_empty())?;
    scheme.eq_ignore_ascii_case(b"bearer").then_some(token)
}

/// Decodes unpadded (or padded) base64url (RFC 4648 section 5).
fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.trim_end_matches('=').bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// The bearer token in a `Sec-WebSocket-Protocol` value
/// (`base64url.bearer.authorization.k8s.io.<base64url token>`, see
/// the entry kube-apiserver accepts from WebSocket clients that cannot set `Authorization`),
/// and the value without it. `None` when there is no such entry, when there are two, or
/// when the token is not base64url.
///
/// ```
/// use kube_bastion::websocket_token;
///
/// let (token, rest) =
///     websocket_token(b"base64url.bearer.authorization.k8s.io.czNjcmV0, v4.channel.k8s.io").unwrap();
/// assert_eq!(token, b"s3cret");
/// assert_eq!(rest, "v4.channel.k8s.io");
/// ```
pub fn websocket_token(protocols: &[u8]) -> Option<(Vec<u8>, String)> {
    let prefix = crate::headers::WEBSOCKET_TOKEN_PROTOCOL_PREFIX;
    let text = std::str::from_utf8(protocols).ok()?;
    let mut token = None;
    let mut rest = Vec::new();
    for protocol in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match protocol.strip_prefix(prefix) {
            Some(encoded) if token.is_none() => token = Some(decode_base64url(encoded)?),
            Some(_) => return None,
            None => rest.push(protocol),
        }
    }
    Some((token?, rest.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_protocol_tokens() {
        assert_eq!(
            decode_base64url("czNjcmV0LXRva2Vu").unwrap(),
            b"s3cret-token"
        );
        assert_eq!(decode_base64url("YQ").unwrap(), b"a");
        assert!(decode_base64url("not base64!").is_none());
        let (token, rest) = websocket_token(
            b"base64url.bearer.authorization.k8s.io.czNjcmV0LXRva2Vu, v4.channel.k8s.io",
        )
        .unwrap();
        assert_eq!(token, b"s3cret-token");
        assert_eq!(rest, "v4.channel.k8s.io");
        assert!(websocket_token(b"v4.channel.k8s.io").is_none());
        assert!(
            websocket_token(
                b"base64url.bearer.authorization.k8s.io.YQ, base64url.bearer.authorization.k8s.io.Yg"
            )
            .is_none(),
            "two tokens are ambiguous"
        );
    }

    #[test]
    fn parses_kube_apiserver_token_files() {
        let file = TokenFile::parse(
            "\u{feff}t1,alice,1001,\"dev,ops\"\n\nt2,bob,1002\r\n\"t,3\",carol,1003,\n",
        )
        .unwrap();
        assert_eq!(file.len(), 3);
        let alice = file.authenticate(b"Bearer t1").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, ["dev", "ops", "system:authenticated"]);
        assert_eq!(file.authenticate(b"bearer t2").unwrap().uid, "1002");
        assert_eq!(file.authenticate(b"Bearer t,3").unwrap().name, "carol");
    }

    #[test]
    fn rejects_bad_token_files() {
        let short = TokenFile::parse("t1,alice\n").unwrap_err();
        assert_eq!(short.line(), Some(1));
        assert!(short.to_string().starts_with("line 1: "), "{short}");
        assert_eq!(
            TokenFile::parse("ok,a,1\n\"t1,alice,1\n")
                .unwrap_err()
                .line(),
            Some(2)
        );
        assert!(TokenFile::parse(",alice,1\n").is_err());
    }

    #[test]
    fn only_bearer_tokens_authenticate() {
        let file = TokenFile::parse("t1,alice,1\n").unwrap();
        assert!(file.authenticate(b"Basic t1").is_none());
        assert!(file.authenticate(b"Bearer").is_none());
        assert!(file.authenticate(b"Bearer ").is_none());
        assert!(file.authenticate(b"Bearer t2").is_none());
        assert!(file.authenticate(b"Bearer t1x").is_none());
        assert!(file.authenticate(b"Bearer t").is_none());
        assert!(file.authenticate(b"Bearer \xff").is_none());
    }

    /// The file keeps digests, never the tokens: nothing in memory or in a debug print
    /// equals a token.
    #[test]
    fn tokens_are_kept_as_digests_only() {
        let token = "a-long-and-secret-token-value";
        let file = TokenFile::parse(&format!("{token},alice,1\n")).unwrap();
        assert!(!format!("{file:?}").contains(token));
        let stored: Vec<&Digest> = file.users.keys().collect();
        assert_eq!(stored, [&digest(token.as_bytes())]);
        assert_ne!(
            &stored[0][..token.len().min(32)],
            &token.as_bytes()[..token.len().min(32)]
        );
        assert!(file.user(token.as_bytes()).is_some());
    }
}
