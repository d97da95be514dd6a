//! The flags of webhook authentication (TokenReview) and authorization
//! (SubjectAccessReview), with kube-apiserver's names and defaults.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// TokenReview and SubjectAccessReview webhooks.
#[derive(Debug, Args)]
#[command(next_help_heading = "Webhook authentication and authorization")]
pub(crate) struct WebhookArgs {
    /// kubeconfig of a webhook (kube-apiserver's flag): bearer tokens no other
    /// authenticator accepts are sent in a TokenReview (authentication.k8s.io/v1) to the
    /// `server` URL of its current context, path included.
    #[arg(
        long = "authentication-token-webhook-config-file",
        value_name = "FILE",
        conflicts_with = "authentication_kubeconfig"
    )]
    pub(crate) authentication_webhook_config_file: Option<PathBuf>,
    /// kubeconfig of a kube-apiserver that authenticates bearer tokens for this server
    /// (delegated authentication): TokenReviews are posted to its
    /// /apis/authentication.k8s.io/v1/tokenreviews.
    #[arg(long = "authentication-kubeconfig", value_name = "FILE")]
    pub(crate) authentication_kubeconfig: Option<PathBuf>,
    /// How long TokenReview answers (authenticated or not) are reused for the same token,
    /// as a Go duration (`2m`, `30s`, `1h`); 0 turns the cache off. Errors are never
    /// cached.
    #[arg(long = "authentication-token-webhook-cache-ttl", value_name = "DURATION",
          default_value = "2m", value_parser = parse_duration)]
    pub(crate) authentication_cache_ttl: Duration,
    /// kubeconfig of a SubjectAccessReview webhook (kube-apiserver's flag), asked by the
    /// `Webhook` entry of --authorization-mode; reviews go to the `server` URL of its
    /// current context, path included.
    #[arg(
        long = "authorization-webhook-config-file",
        value_name = "FILE",
        conflicts_with = "authorization_kubeconfig"
    )]
    pub(crate) authorization_webhook_config_file: Option<PathBuf>,
    /// kubeconfig of a kube-apiserver that authorizes requests for this server (delegated
    /// authorization), asked by the `Webhook` entry of --authorization-mode:
    /// SubjectAccessReviews are posted to its
    /// /apis/authorization.k8s.io/v1/subjectaccessreviews.
    #[arg(long = "authorization-kubeconfig", value_name = "FILE")]
    pub(crate) authorization_kubeconfig: Option<PathBuf>,
    /// How long an allowed SubjectAccessReview answer is reused, as a Go duration; 0 does
    /// not cache them.
    #[arg(long = "authorization-webhook-cache-authorized-ttl", value_name = "DURATION",
          default_value = "5m", value_parser = parse_duration)]
    pub(crate) authorization_authorized_ttl: Duration,
    /// How long a SubjectAccessReview answer that does not allow is reused, as a Go
    /// duration; 0 does not cache them.
    #[arg(long = "authorization-webhook-cache-unauthorized-ttl", value_name = "DURATION",
          default_value = "30s", value_parser = parse_duration)]
    pub(crate) authorization_unauthorized_ttl: Duration,
}

/// A Go duration (`time.ParseDuration`): a sequence of decimal numbers, each with an
/// optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such as `1h30m`
/// or `1.5s`; `0` alone needs no unit. Negative durations are refused.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (examples: 2m, 30s, 1h30m, 500ms)");
    let rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return Err(invalid());
    }
    let mut total = 0f64;
    let mut rest = rest;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += value * seconds;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for (text, expected) in [
            ("2m", Duration::from_secs(120)),
            ("30s", Duration::from_secs(30)),
            ("1h", Duration::from_secs(3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("5m0s", Duration::from_secs(300)),
            ("1.5s", Duration::from_millis(1500)),
            ("500ms", Duration::from_millis(500)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("+10s", Duration::from_secs(10)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for text in ["", "2", "-1s", "1d", "s", "1..5s", "1m-2s", "abc"] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }
}
