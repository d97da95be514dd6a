//! The static token file (`TokenFile::parse`, Go `encoding/csv` quoting) and the credentials a
//! client presents (`TokenFile::authenticate` on an `Authorization` value, `websocket_token`
//! on a `Sec-WebSocket-Protocol` value). Every simple line of a file that parses
//! authenticates its token (the last line wins); a user always carries
//! `system:authenticated`; a base64url token in a WebSocket protocol round-trips.
//!
//! Input: `token file text \0 Authorization value`.
#![no_main]

use kube_bastion::{TokenFile, websocket_token};
use libfuzzer_sys::fuzz_target;

/// The WebSocket subprotocol prefix kube-apiserver reads a bearer token from.
const WEBSOCKET_TOKEN_PROTOCOL_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (text, authorization) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"Bearer s3cret"[..]),
    };

    let protocols = format!(
        "{WEBSOCKET_TOKEN_PROTOCOL_PREFIX}{}, v4.channel.k8s.io",
        base64url(authorization)
    );
    let (token, rest) =
        websocket_token(protocols.as_bytes()).expect("a well-formed token protocol");
    assert_eq!(token, authorization);
    assert_eq!(rest, "v4.channel.k8s.io");
    let _ = websocket_token(authorization);

    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(file) = TokenFile::parse(text) else {
        return;
    };
    if let Some(user) = file.authenticate(authorization) {
        assert!(
            authorization
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer "))
        );
        assert_eq!(
            user.groups.last().map(String::as_str),
            Some("system:authenticated")
        );
    }
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut last = std::collections::HashMap::new();
    for line in body.lines().map(|l| l.trim_end_matches('\r')) {
        if line.trim().is_empty() || line.contains('"') {
            continue;
        }
        let mut fields = line.split(',');
        let (token, name) = (
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default(),
        );
        last.insert(token.to_owned(), name.to_owned());
    }
    for (token, name) in &last {
        let user = file
            .user(token.as_bytes())
            .expect("a token of the file authenticates");
        // A quoted line may have redefined the token later; only check when it did not.
        if !body.contains('"') {
            assert_eq!(&user.name, name);
            if !token.contains(' ') {
                let header = format!("Bearer {token}");
                assert_eq!(
                    file.authenticate(header.as_bytes()).map(|u| &u.name),
                    Some(name)
                );
            }
        }
    }
});
