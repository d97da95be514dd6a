//! Redirect safety for ordinary (non-upgrade) requests.
//!
//! A backend redirect on an ordinary request is passed to the client (its `Location`
//! rewritten under the proxy prefix) and never followed by the proxy. With
//! [`super::UpgradeOptions::reject_forwarding_redirects`] on, any 3xx with a `Location` is
//! replaced by a 502, as kube-apiserver's aggregator does (CVE-2022-3172).

use http::header::LOCATION;
use http::{HeaderMap, StatusCode};

use crate::Status;

/// The message of the 502 that replaces a rejected redirect (kube-apiserver's aggregator
/// text).
pub(crate) const REDIRECT_REJECTED_MESSAGE: &str =
    "the backend attempted to redirect this request, which is not permitted";

/// Whether a backend response is a redirect that would forward the client elsewhere: a 3xx
/// whose first `Location` value is not empty. A 3xx without `Location` (a `304 Not
/// Modified`, say) is not one.
pub(crate) fn is_forwarding_redirect(status: StatusCode, headers: &HeaderMap) -> bool {
    status.is_redirection()
        && headers
            .get(LOCATION)
            .is_some_and(|l| !l.as_bytes().is_empty())
}

/// With `reject` on, the Status that replaces a forwarding redirect (502, no reason,
/// [`REDIRECT_REJECTED_MESSAGE`]); `None` when the response may be passed on.
///
/// The engine calls this on every ordinary backend response head, before rewriting.
pub(crate) fn check_forwarding_redirect(
    reject: bool,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<Status> {
    (reject && is_forwarding_redirect(status, headers))
        .then(|| Status::new(502, None, REDIRECT_REJECTED_MESSAGE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_location(value: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(LOCATION, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn only_3xx_with_a_location_is_a_forwarding_redirect() {
        let there = with_location(Some("https://elsewhere.example/"));
        for code in [300, 301, 302, 303, 307, 308] {
            assert!(
                is_forwarding_redirect(StatusCode::from_u16(code).unwrap(), &there),
                "{code}"
            );
        }
        // A relative Location still points the client somewhere.
        assert!(is_forwarding_redirect(
            StatusCode::FOUND,
            &with_location(Some("/login"))
        ));
        // 304 and friends without a Location pass.
        assert!(!is_forwarding_redirect(
            StatusCode::NOT_MODIFIED,
            &with_location(None)
        ));
        assert!(!is_forwarding_redirect(
            StatusCode::FOUND,
            &with_location(Some(""))
        ));
        // Location on a non-3xx is not a redirect (201 Created, for example).
        assert!(!is_forwarding_redirect(StatusCode::CREATED, &there));
        assert!(!is_forwarding_redirect(StatusCode::OK, &there));
    }

    #[test]
    fn nothing_is_rejected_when_the_option_is_off() {
        let there = with_location(Some("https://elsewhere.example/"));
        assert!(check_forwarding_redirect(false, StatusCode::FOUND, &there).is_none());
        assert!(check_forwarding_redirect(true, StatusCode::OK, &there).is_none());
    }
}
