//! Passive health: consecutive failures eject an endpoint for a backoff that grows with
//! repeated ejections, bounded by a share of the Service's endpoints.

use std::time::Duration;

use super::clock::nanos;
use super::state::{Endpoint, ServiceStats};

/// Outlier ejection settings (passive health checking, in the spirit of Envoy's outlier
/// detection).
///
/// An endpoint is ejected after [`consecutive_failures`](Self::consecutive_failures)
/// failures in a row. Its `n`-th ejection lasts `base_ejection_time * 2^(n-1)`, capped at
/// [`max_ejection_time`](Self::max_ejection_time). After that it is back in rotation on
/// probation: one success returns it fully, one failure ejects it again for longer. The
/// ejection count decays to zero once the endpoint has stayed healthy for
/// `max_ejection_time`.
///
/// Ejection is a preference, never a hard block: when every candidate of a Service is
/// ejected (or tried), ejected ones are still tried rather than failing without a dial.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EjectionConfig {
    /// Failures in a row that eject an endpoint; `0` turns ejection off. Default 5.
    pub consecutive_failures: u32,
    /// Whether a 5xx response head counts as a failure (connect failures and resets always
    /// do). Default `false`: a 5xx is the application's answer, relayed to the client.
    pub eject_on_5xx: bool,
    /// Length of the first ejection. Default 30 s.
    pub base_ejection_time: Duration,
    /// Longest ejection. Default 300 s.
    pub max_ejection_time: Duration,
    /// Most endpoints of one Service that may be ejected at once, in percent of its current
    /// candidates; at least one endpoint may always be ejected unless this is `0`.
    /// Default 50.
    pub max_ejection_percent: u8,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            eject_on_5xx: false,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

impl EjectionConfig {
    /// How long the `ejections`-th ejection lasts (`ejections >= 1`).
    pub fn backoff(&self, ejections: u32) -> Duration {
        let doublings = ejections.saturating_sub(1).min(32);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.base_ejection_time
            .saturating_mul(factor)
            .min(self.max_ejection_time)
    }

    /// How many of `candidates` endpoints may be ejected at once.
    pub fn max_ejected(&self, candidates: usize) -> usize {
        if self.max_ejection_percent == 0 || self.consecutive_failures == 0 {
            return 0;
        }
        let percent = usize::from(self.max_ejection_percent.min(100));
        (candidates.saturating_mul(percent) / 100).max(1)
    }
}

/// Mutable health of one endpoint (behind the endpoint's mutex).
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Failures in a row.
    pub(crate) consecutive_failures: u32,
    /// Ejections so far (drives the backoff).
    pub(crate) ejections: u32,
    /// Whether this endpoint is counted in its Service's ejected total (ejected, or on
    /// probation after an ejection).
    pub(crate) counted: bool,
    /// End of the latest ejection, in timeline nanoseconds.
    pub(crate) ejection_end: u64,
    /// Removed from its Service table: never counted again.
    pub(crate) removed: bool,
}

/// What a failure did to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureOutcome {
    /// Still in rotation.
    Kept,
    /// Ejected until this timeline instant.
    Ejected {
        /// End of the ejection.
        until: u64,
    },
    /// Would have been ejected, but the Service already has its share ejected.
    CapReached,
}

impl Endpoint {
    /// Records a failure at `now`.
    pub(crate) fn record_failure(&self, config: &EjectionConfig, now: u64) -> FailureOutcome {
        let mut health = self.lock_health();
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        if config.consecutive_failures == 0 || health.removed {
            return FailureOutcome::Kept;
        }
        if health.counted {
            if now < health.ejection_end {
                // A request that started before the ejection: already accounted for.
                return FailureOutcome::Kept;
            }
            // Failed on probation: eject again, for longer.
            return self.eject(&mut health, config, now);
        }
        if health.consecutive_failures < config.consecutive_failures {
            return FailureOutcome::Kept;
        }
        if !self.service.try_count_ejection(config) {
            return FailureOutcome::CapReached;
        }
        health.counted = true;
        self.eject(&mut health, config, now)
    }

    fn eject(&self, health: &mut Health, config: &EjectionConfig, now: u64) -> FailureOutcome {
        health.ejections = health.ejections.saturating_add(1);
        let until = now.saturating_add(nanos(config.backoff(health.ejections)));
        health.ejection_end = until;
        self.set_ejected_until(until);
        tracing::warn!(
            endpoint = %self.key,
            ejections = health.ejections,
            backoff_ms = config.backoff(health.ejections).as_millis() as u64,
            "endpoint ejected after consecutive failures"
        );
        FailureOutcome::Ejected { until }
    }

    /// Records a success at `now`: clears the failure streak and, after the ejection is
    /// over, returns the endpoint to full rotation.
    pub(crate) fn record_success(&self, config: &EjectionConfig, now: u64) {
        let mut health = self.lock_health();
        health.consecutive_failures = 0;
        if health.counted && now >= health.ejection_end {
            health.counted = false;
            self.set_ejected_until(0);
            self.service.release_ejection();
            tracing::info!(endpoint = %self.key, "ejected endpoint answered again");
        }
        if !health.counted
            && health.ejections > 0
            && now.saturating_sub(health.ejection_end) >= nanos(config.max_ejection_time)
        {
            health.ejections = 0;
        }
    }

    /// Marks the endpoint as removed from its Service (it left the cluster view).
    pub(crate) fn mark_removed(&self) {
        let mut health = self.lock_health();
        if !health.removed {
            health.removed = true;
            if health.counted {
                health.counted = false;
                self.service.release_ejection();
            }
        }
    }
}

impl ServiceStats {
    /// Counts one more ejected endpoint if the Service's share allows it.
    pub(crate) fn try_count_ejection(&self, config: &EjectionConfig) -> bool {
        let allowed = config.max_ejected(self.candidates());
        self.ejected_counter()
            .fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |current| {
                    if (current as usize) < allowed {
                        Some(current + 1)
                    } else {
                        None
                    }
                },
            )
            .is_ok()
    }

    /// One ejected endpoint returned (or left).
    pub(crate) fn release_ejection(&self) {
        let _ = self.ejected_counter().fetch_update(
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
            |current| Some(current.saturating_sub(1)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let config = EjectionConfig {
            base_ejection_time: Duration::from_secs(1),
            max_ejection_time: Duration::from_secs(10),
            ..EjectionConfig::default()
        };
        let seconds: Vec<u64> = (1..=6).map(|n| config.backoff(n).as_secs()).collect();
        assert_eq!(seconds, [1, 2, 4, 8, 10, 10]);
        assert_eq!(config.backoff(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn at_least_one_endpoint_may_be_ejected_unless_disabled() {
        let config = EjectionConfig::default();
        assert_eq!(config.max_ejected(1), 1);
        assert_eq!(config.max_ejected(3), 1);
        assert_eq!(config.max_ejected(10), 5);
        let none = EjectionConfig {
            max_ejection_percent: 0,
            ..EjectionConfig::default()
        };
        assert_eq!(none.max_ejected(10), 0);
        let off = EjectionConfig {
            consecutive_failures: 0,
            ..EjectionConfig::default()
        };
        assert_eq!(off.max_ejected(10), 0);
        let all = EjectionConfig {
            max_ejection_percent: 200,
            ..EjectionConfig::default()
        };
        assert_eq!(all.max_ejected(4), 4);
    }
}
