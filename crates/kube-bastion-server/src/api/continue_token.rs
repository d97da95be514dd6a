//! `continue` tokens of paged lists, in kube-apiserver's format: base64url without padding
//! of `{"v":"meta.k8s.io/v1","rv":<list RV>,"start":"<next key>"}`, where the next key is
//! the last returned key (relative to the list's key prefix) followed by a NUL byte. Decoding
//! returns upstream's errors (`invalid continue token: ...`, 400), including its defence
//! against start keys that leave the list's prefix (`../key`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kube_bastion::Status;
use serde::{Deserialize, Serialize};

/// The only token version.
const VERSION: &str = "meta.k8s.io/v1";

#[derive(Serialize, Deserialize)]
struct Token {
    #[serde(default)]
    v: String,
    #[serde(default)]
    rv: i64,
    #[serde(default)]
    start: String,
}

/// A decoded token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Continue {
    /// The resourceVersion of the list the token continues (negative: the current state,
    /// as in the fresh token of a 410).
    pub(crate) resource_version: i64,
    /// Where the next page starts, relative to the list's key prefix (`ns/name\0` for a
    /// cluster-wide list of a namespaced kind, `name\0` otherwise).
    pub(crate) start: String,
}

/// Encodes a token continuing the list at `resource_version` from `start`.
pub(crate) fn encode(resource_version: i64, start: &str) -> String {
    let token = Token {
        v: VERSION.to_owned(),
        rv: resource_version,
        start: start.to_owned(),
    };
    // Serializing a struct of strings and a number cannot fail.
    let json = serde_json::to_vec(&token).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// The key after `key`: `key` followed by a NUL byte.
pub(crate) fn next_key(key: &str) -> String {
    format!("{key}\u{0}")
}

fn invalid(detail: impl std::fmt::Display) -> Status {
    Status::bad_request(format!("invalid continue token: {detail}"))
}

/// Whether `key` (which starts with `/`) is what Go's `path.Clean` makes of it.
fn is_clean(key: &str) -> bool {
    if key == "/" {
        return true;
    }
    !key.ends_with('/')
        && key[1..]
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// Decodes a token (`DecodeContinue`), answering upstream's 400 for every invalid one.
pub(crate) fn decode(value: &str) -> Result<Continue, Status> {
    const GENERIC: &str = "continue key is not valid";
    let data = URL_SAFE_NO_PAD.decode(value).map_err(|e| {
        let offset = match e {
            base64::DecodeError::InvalidByte(at, _)
            | base64::DecodeError::InvalidLastSymbol(at, _) => at,
            base64::DecodeError::InvalidLength(len) => len,
            base64::DecodeError::InvalidPadding => value.len(),
        };
        invalid(format!(
            "{GENERIC}: illegal base64 data at input byte {offset}"
        ))
    })?;
    let token: Token =
        serde_json::from_slice(&data).map_err(|e| invalid(format!("{GENERIC}: {e}")))?;
    if token.v != VERSION {
        return Err(invalid(format!(
            "{GENERIC}: server does not recognize this encoded version {}",
            token.v
        )));
    }
    if token.rv == 0 {
        return Err(invalid(format!(
            "{GENERIC}: incorrect encoded start resourceVersion (version {VERSION})"
        )));
    }
    if token.start.is_empty() {
        return Err(invalid(format!(
            "{GENERIC}: encoded start key empty (version {VERSION})"
        )));
    }
    let key = if token.start.starts_with('/') {
        token.start.clone()
    } else {
        format!("/{}", token.start)
    };
    if !is_clean(&key) {
        return Err(invalid(format!("{GENERIC}: {}", token.start)));
    }
    Ok(Continue {
        resource_version: token.rv,
        start: key[1..].to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    /// The vector row "continue token format".
    #[test]
    fn format_is_upstreams() {
        let token = encode(4021, &next_key("default/web-3"));
        let json = URL_SAFE_NO_PAD.decode(&token).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"v":"meta.k8s.io/v1","rv":4021,"start":"default/web-3\u0000"}"#
        );
        assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'));
        assert_eq!(
            decode(&token).unwrap(),
            Continue {
                resource_version: 4021,
                start: "default/web-3\u{0}".to_owned()
            }
        );
    }

    /// The vector rows "invalid continue token: ...".
    #[test]
    fn invalid_tokens_have_upstreams_texts() {
        let message = |token: &str| decode(token).unwrap_err().message().to_owned();
        assert_eq!(
            message(&raw(r#"{"v":"","rv":1,"start":""}"#)),
            "invalid continue token: continue key is not valid: server does not recognize \
             this encoded version "
        );
        assert_eq!(
            message(&raw(r#"{"v":"meta.k8s.io/v1","rv":1,"start":""}"#)),
            "invalid continue token: continue key is not valid: encoded start key empty \
             (version meta.k8s.io/v1)"
        );
        assert_eq!(
            message(&raw(r#"{"v":"meta.k8s.io/v1","rv":1,"start":"../key"}"#)),
            "invalid continue token: continue key is not valid: ../key"
        );
        assert_eq!(
            message(&raw(r#"{"v":"meta.k8s.io/v1","rv":0,"start":"a"}"#)),
            "invalid continue token: continue key is not valid: incorrect encoded start \
             resourceVersion (version meta.k8s.io/v1)"
        );
        for bad in ["a/b/../c", "./a", "a//b", "a/", "a/."] {
            let token = raw(&format!(
                r#"{{"v":"meta.k8s.io/v1","rv":1,"start":"{bad}"}}"#
            ));
            assert_eq!(decode(&token).unwrap_err().code(), 400, "{bad}");
        }
        assert!(message("!!!").starts_with(
            "invalid continue token: continue key is not valid: illegal base64 data at input byte 0"
        ));
        assert_eq!(decode(&raw("[1]")).unwrap_err().code(), 400);
        // A negative RV (the fresh token of a 410) is valid.
        let fresh = decode(&raw(r#"{"v":"meta.k8s.io/v1","rv":-1,"start":"/x"}"#)).unwrap();
        assert_eq!((fresh.resource_version, fresh.start.as_str()), (-1, "x"));
    }
}
