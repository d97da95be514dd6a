//! Front-proxy identity headers: the proxy's credential stripping on arbitrary client
//! headers never leaves a credential or identity header (in any spelling a CGI-style backend
//! would read as one: `_` for `-`), and an extra-attribute key written into a header name
//! reads back as itself, lower-cased, on the receiving side; upstream's `unescapeExtraKey`
//! never panics on arbitrary header-name suffixes.
//!
//! Input: `name: value` lines `\0` an extra-attribute key.
#![no_main]

use kube_bastion::fuzzing::{
    extra_key_round_trip, header_map, strip_credentials, unescape_extra_key,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (lines, key) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let mut headers = header_map(lines);
    strip_credentials(&mut headers);
    for name in headers.keys() {
        let name = name.as_str().replace('_', "-");
        assert!(
            name != "authorization"
                && !name.starts_with("impersonate-")
                && !name.starts_with("x-remote-"),
            "{name} was forwarded"
        );
    }
    // kube-apiserver matches the bearer protocol case-sensitively after trimming spaces.
    for value in headers.get_all("sec-websocket-protocol") {
        assert!(
            !value.as_bytes().split(|b| *b == b',').any(|t| t
                .trim_ascii()
                .starts_with(b"base64url.bearer.authorization.k8s.io.")),
            "a bearer token protocol was forwarded"
        );
    }

    if let Ok(key) = std::str::from_utf8(key) {
        assert_eq!(extra_key_round_trip(key), key.to_ascii_lowercase());
        let _ = unescape_extra_key(key);
    }
});
