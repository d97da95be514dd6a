//! Balancing policies and the per-Service annotation that overrides the configured one.

use std::fmt;
use std::str::FromStr;

// The one definition lives in the core, which reads it into `ServiceInfo::balancer`.
pub use kube_bastion_core::resolve::BALANCER_ANNOTATION;

/// How one endpoint is chosen among a Service's candidates.
///
/// Every policy first honours ClientIP session affinity, skips ejected endpoints while
/// others remain and prefers ready endpoints over serving-terminating ones; the policy only
/// decides among what is left. Choosing is O(1) in the number of candidates for every
/// policy: power-of-two-choices samples two indices, it never scans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BalancePolicy {
    /// A uniformly random candidate, as kube-apiserver does (parity mode).
    Random,
    /// Candidates in turn, one after the other (per Service, shared by all requests).
    RoundRobin,
    /// Power of two choices: sample two candidates, take the one with fewer requests in
    /// flight.
    LeastRequest,
    /// Power of two choices on in-flight requests weighted by a peak-sensitive,
    /// exponentially weighted moving average of response latency (the linkerd and tower
    /// "Peak EWMA" balancer). The default.
    #[default]
    PeakEwma,
}

impl BalancePolicy {
    /// The canonical annotation value (`random`, `round-robin`, `least-request`,
    /// `peak-ewma`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::RoundRobin => "round-robin",
            Self::LeastRequest => "least-request",
            Self::PeakEwma => "peak-ewma",
        }
    }

    /// All policies, in declaration order.
    pub const ALL: [BalancePolicy; 4] = [
        Self::Random,
        Self::RoundRobin,
        Self::LeastRequest,
        Self::PeakEwma,
    ];
}

impl fmt::Display for BalancePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A [`BALANCER_ANNOTATION`] value that names no policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown balancing policy {value:?}: expected random, round-robin, least-request or peak-ewma"
)]
pub struct UnknownPolicy {
    value: String,
}

impl UnknownPolicy {
    /// The value that was given.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl FromStr for BalancePolicy {
    type Err = UnknownPolicy;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let known = [
            ("random", Self::Random),
            ("round-robin", Self::RoundRobin),
            ("roundrobin", Self::RoundRobin),
            ("round_robin", Self::RoundRobin),
            ("least-request", Self::LeastRequest),
            ("leastrequest", Self::LeastRequest),
            ("least_request", Self::LeastRequest),
            ("peak-ewma", Self::PeakEwma),
            ("peakewma", Self::PeakEwma),
            ("peak_ewma", Self::PeakEwma),
            ("ewma", Self::PeakEwma),
        ];
        known
            .iter()
            .find(|(name, _)| trimmed.eq_ignore_ascii_case(name))
            .map(|&(_, policy)| policy)
            .ok_or_else(|| UnknownPolicy {
                value: text.to_owned(),
            })
    }
}

/// The policy for a Service: its annotation when it names one, else `default`. The error
/// is returned beside the fallback so the caller can log it.
pub(crate) fn effective_policy(
    default: BalancePolicy,
    annotation: Option<&str>,
) -> (BalancePolicy, Option<UnknownPolicy>) {
    match annotation.map(str::parse::<BalancePolicy>) {
        None => (default, None),
        Some(Ok(policy)) => (policy, None),
        Some(Err(error)) => (default, Some(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_canonical_names_and_aliases() {
        for policy in BalancePolicy::ALL {
            assert_eq!(policy.as_str().parse::<BalancePolicy>(), Ok(policy));
            assert_eq!(
                policy.to_string().to_uppercase().parse::<BalancePolicy>(),
                Ok(policy)
            );
        }
        assert_eq!(
            " Round_Robin ".parse::<BalancePolicy>(),
            Ok(BalancePolicy::RoundRobin)
        );
        assert_eq!("ewma".parse::<BalancePolicy>(), Ok(BalancePolicy::PeakEwma));
        assert_eq!(
            "leastrequest".parse::<BalancePolicy>(),
            Ok(BalancePolicy::LeastRequest)
        );
    }

    #[test]
    fn rejects_unknown_values() {
        let error = "fastest".parse::<BalancePolicy>().unwrap_err();
        assert_eq!(error.value(), "fastest");
        assert!(error.to_string().contains("\"fastest\""));
        assert!("".parse::<BalancePolicy>().is_err());
        assert!("round robin".parse::<BalancePolicy>().is_err());
    }

    #[test]
    fn annotation_overrides_default_and_invalid_falls_back() {
        let default = BalancePolicy::LeastRequest;
        assert_eq!(effective_policy(default, None), (default, None));
        assert_eq!(
            effective_policy(default, Some("random")).0,
            BalancePolicy::Random
        );
        let (policy, error) = effective_policy(default, Some("bogus"));
        assert_eq!(policy, default);
        assert_eq!(
            error.map(|e| e.value().to_owned()).as_deref(),
            Some("bogus")
        );
        assert_eq!(BalancePolicy::default(), BalancePolicy::PeakEwma);
    }
}
