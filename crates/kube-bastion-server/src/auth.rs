//! Authentication with kube-apiserver's static token file (`--token-auth-file`).
//!
//! The file is CSV, one user per line: `token,user,uid[,"group1,group2"]`. A request must
//! carry `Authorization: Bearer <token>` with a listed token; otherwise it is answered 401
//! with kube-apiserver's Status. `/healthz`, `/livez`, `/readyz` and `/version` stay open,
//! as kube-apiserver's default RBAC lets anyone read them. The user is put in the request's
//! extensions as an [`AuthenticatedUser`] for the proxy's authorizer. As in kube-apiserver,
//! a WebSocket client that cannot set headers may instead offer the subprotocol
//! `base64url.bearer.authorization.k8s.io.<base64url token>`, which is removed once used.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header::AUTHORIZATION;
use kube_bastion::Status;

use crate::api::status_response;

/// The user a request authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AuthenticatedUser {
    /// User name.
    pub(crate) name: String,
    /// User uid.
    pub(crate) uid: String,
    /// Groups, including `system:authenticated`.
    pub(crate) groups: Vec<String>,
}

/// The parsed token file.
#[derive(Clone, Debug, Default)]
pub(crate) struct TokenFile {
    users: HashMap<Vec<u8>, AuthenticatedUser>,
}

/// Splits one CSV line (RFC 4180 quoting, as Go's `encoding/csv` reads it).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
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
                        return Err("extraneous \" in field".to_owned());
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
            '"' => return Err("bare \" in non-quoted field".to_owned()),
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
        return Err("extraneous or missing \" in quoted field".to_owned());
    }
    fields.push(field);
    Ok(fields)
}

impl TokenFile {
    /// Parses the file's text. Errors name the line.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let record = csv_fields(line).map_err(|e| format!("line {number}: {e}"))?;
            if record.len() < 3 {
                return Err(format!(
                    "line {number}: must have at least 3 columns (token, user name, user uid), \
                     found {}",
                    record.len()
                ));
            }
            if record[0].is_empty() {
                return Err(format!("line {number}: empty token"));
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
            let user = AuthenticatedUser {
                name: record[1].clone(),
                uid: record[2].clone(),
                groups,
            };
            if users.insert(record[0].as_bytes().to_vec(), user).is_some() {
                tracing::warn!(
                    line = number,
                    "duplicate token in token file; the later line wins"
                );
            }
        }
        Ok(TokenFile { users })
    }

    /// Reads and parses a token file.
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        Self::parse(&text)
    }

    /// Number of tokens.
    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }

    /// The user of a request's `Authorization` header value, if it is a known bearer token.
    pub(crate) fn authenticate(&self, authorization: &[u8]) -> Option<&AuthenticatedUser> {
        let mut parts = authorization.splitn(3, |b| *b == b' ');
        let scheme = parts.next()?;
        let token = parts.next()?;
        if !scheme.eq_ignore_ascii_case(b"bearer") || token.is_empty() {
            return None;
        }
        self.users.get(token)
    }
}

/// The WebSocket subprotocol prefix kube-apiserver accepts a bearer token in, for clients
/// (browsers) that cannot set `Authorization` on a WebSocket.
const WEBSOCKET_TOKEN_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// Decodes unpadded base64url (RFC 4648 section 5).
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

/// The token in a `Sec-WebSocket-Protocol` value, and the value without it (kube-apiserver
/// removes it before the request goes on).
fn websocket_token(protocols: &[u8]) -> Option<(Vec<u8>, String)> {
    let text = std::str::from_utf8(protocols).ok()?;
    let mut token = None;
    let mut rest = Vec::new();
    for protocol in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match protocol.strip_prefix(WEBSOCKET_TOKEN_PREFIX) {
            Some(encoded) if token.is_none() => token = Some(decode_base64url(encoded)?),
            Some(_) => return None,
            None => rest.push(protocol),
        }
    }
    Some((token?, rest.join(", ")))
}

/// Paths anyone may read (kube-apiserver's `system:public-info-viewer`).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
}

/// The 401 answer.
pub(crate) fn unauthorized() -> Status {
    Status::new(401, Some("Unauthorized"), "Unauthorized")
}

/// Middleware: authenticates every request against `tokens`.
pub(crate) async fn authenticate(
    State(tokens): State<Arc<TokenFile>>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut user = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| tokens.authenticate(value.as_bytes()))
        .cloned();
    if user.is_none()
        && let Some((token, rest)) = request
            .headers()
            .get(http::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|value| websocket_token(value.as_bytes()))
    {
        let mut authorization = b"Bearer ".to_vec();
        authorization.extend_from_slice(&token);
        user = tokens.authenticate(&authorization).cloned();
        if user.is_some() {
            let headers = request.headers_mut();
            match http::HeaderValue::from_str(&rest) {
                Ok(value) if !rest.is_empty() => {
                    headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, value);
                }
                _ => {
                    headers.remove(http::header::SEC_WEBSOCKET_PROTOCOL);
                }
            }
        }
    }
    match user {
        Some(user) => {
            tracing::debug!(user = %user.name, "authenticated");
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        None if is_public(request.uri().path()) => next.run(request).await,
        None => status_response(&unauthorized()),
    }
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
        assert!(
            TokenFile::parse("t1,alice\n")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            TokenFile::parse("ok,a,1\n\"t1,alice,1\n")
                .unwrap_err()
                .contains("line 2")
        );
        assert!(TokenFile::parse(",alice,1\n").is_err());
    }

    #[test]
    fn only_bearer_tokens_authenticate() {
        let file = TokenFile::parse("t1,alice,1\n").unwrap();
        assert!(file.authenticate(b"Basic t1").is_none());
        assert!(file.authenticate(b"Bearer").is_none());
        assert!(file.authenticate(b"Bearer t2").is_none());
        assert!(file.authenticate(b"Bearer \xff").is_none());
    }
}
