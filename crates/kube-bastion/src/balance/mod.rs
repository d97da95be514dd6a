//! Service load balancing, endpoint health and failover.
//!
//! kube-apiserver picks a uniformly random endpoint for `services/proxy`, never retries and
//! keeps sending traffic to a dead endpoint until the Endpoints object changes. A
//! [`Balancer`] instead keeps per-endpoint state across requests (requests in flight, a
//! peak-EWMA latency estimate, consecutive failures, ejection) and gives every request a
//! failover plan ([`Attempts`]):
//!
//! * [`BalancePolicy`]: `Random` (kube-apiserver parity), `RoundRobin`, `LeastRequest` and
//!   `PeakEwma` (the default), chosen per [`BalancerConfig`] and per Service with the
//!   [`BALANCER_ANNOTATION`] annotation;
//! * failover to the next candidate on a connect or TLS failure, before any request byte
//!   left, up to [`BalancerConfig::max_attempts`]; see [`Attempts::may_retry`];
//! * passive health ([`EjectionConfig`]): consecutive failures eject an endpoint for a
//!   growing backoff, never more than a share of a Service's endpoints;
//! * ClientIP session affinity with `timeoutSeconds`, as kube-proxy does;
//! * an optional per-endpoint concurrency cap with a bounded queue ([`ConcurrencyLimit`]).

// Choosing is O(1) in the number of candidates and touches neither the candidate list nor
// the endpoints' state objects in the usual case. Each Service's table is bound to the
// candidate list it last saw, by identity (resolution shares one
// [`Candidates`](kube_bastion_core::Candidates) list per snapshot, so a pointer comparison
// tells that nothing changed), and maps candidate positions to small slot numbers; the
// figures a policy compares (requests in flight, end of an ejection, latency estimate) live
// in dense 16-byte cells indexed by slot. A sample is then one 4-byte map entry and one
// cell, and the two samples of power-of-two-choices are independent loads. A new list is
// mapped lazily, position by position, by address, so the state follows each endpoint
// wherever the list puts it; the request's share of the state (an `Arc` the request holds
// until it completes) is fetched when the attempt starts, not when it is chosen. Endpoints
// that leave the candidate list are dropped by an incremental sweep, idle Services by a
// periodic one, and a balancer-wide bound caps the whole
// ([`BalancerConfig::max_tracked_endpoints`]). `docs/balancing.md` has the details and
// `docs/benchmarks.md` the costs.

mod affinity;
mod algorithm;
mod clock;
mod failover;
mod handle;
mod health;
mod limit;
mod state;
mod table;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use foldhash::fast::RandomState;
use kube_bastion_core::{ServiceInfo, Target};
use rand::SeedableRng;
use rand::rngs::SmallRng;

pub use algorithm::{BALANCER_ANNOTATION, BalancePolicy, UnknownPolicy};
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
pub use clock::Clock;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
pub use clock::ManualClock;
pub(crate) use clock::SystemClock;
pub(crate) use failover::{Attempts, FailureKind};
pub(crate) use handle::RequestHandle;
pub use health::EjectionConfig;
pub use limit::ConcurrencyLimit;

use clock::{Timeline, nanos};
use state::{EndpointKey, ServiceStats};
use table::Table;

/// Balancer settings. Every field has a default; see each.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BalancerConfig {
    /// Policy for Services without a [`BALANCER_ANNOTATION`]. Default [`BalancePolicy::PeakEwma`].
    pub policy: BalancePolicy,
    /// Most endpoints one request tries (first choice included). Default 3; 0 counts as 1.
    pub max_attempts: usize,
    /// Whether an idempotent request (GET, HEAD, OPTIONS) whose body can be sent again may
    /// be retried on another endpoint when the connection breaks before the response head.
    /// Default `false`.
    pub retry_idempotent_on_reset: bool,
    /// Passive health checking.
    pub ejection: EjectionConfig,
    /// Per-endpoint concurrency cap. Default none.
    pub concurrency_limit: Option<ConcurrencyLimit>,
    /// Time constant of the latency average: how fast old samples stop counting and how
    /// fast an idle endpoint's estimate decays towards zero. Default 10 s (linkerd, tower).
    pub ewma_decay: Duration,
    /// Latency assumed for a Service's endpoints before any was measured. Default 30 ms.
    pub default_rtt: Duration,
    /// Endpoints with state, over all Services; beyond it new endpoints are balanced without
    /// keeping state. Default 262,144.
    pub max_tracked_endpoints: usize,
    /// Client addresses remembered per Service for ClientIP affinity. Default 65,536.
    pub max_affinity_clients: usize,
    /// A Service not balanced for this long (and with nothing in flight) is forgotten.
    /// Default 10 minutes.
    pub service_idle_timeout: Duration,
    /// Seed of the balancer's random choices; `None` seeds from the operating system.
    /// Tests set it to make every choice reproducible.
    pub seed: Option<u64>,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            policy: BalancePolicy::default(),
            max_attempts: 3,
            retry_idempotent_on_reset: false,
            ejection: EjectionConfig::default(),
            concurrency_limit: None,
            ewma_decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
            max_tracked_endpoints: 1 << 18,
            max_affinity_clients: 1 << 16,
            service_idle_timeout: Duration::from_secs(600),
            seed: None,
        }
    }
}

impl BalancerConfig {
    /// Sets [`policy`](Self::policy).
    pub fn with_policy(mut self, policy: BalancePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets [`seed`](Self::seed).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn with_max_attempts(mut self, attempts: usize) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets [`ejection`](Self::ejection).
    pub fn with_ejection(mut self, ejection: EjectionConfig) -> Self {
        self.ejection = ejection;
        self
    }

    /// Sets [`concurrency_limit`](Self::concurrency_limit).
    pub fn with_concurrency_limit(mut self, limit: ConcurrencyLimit) -> Self {
        self.concurrency_limit = Some(limit);
        self
    }
}

/// Which Service (and Service port) a set of endpoint states belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Service port name (possibly empty).
    pub port_name: String,
}

impl ServiceKey {
    /// The key of `namespace/name`, port `port_name`.
    pub fn new(namespace: &str, name: &str, port_name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            port_name: port_name.into(),
        }
    }

    fn is(&self, info: &ServiceInfo) -> bool {
        self.namespace == info.namespace
            && self.name == info.name
            && self.port_name == info.port_name
    }
}

impl From<&ServiceInfo> for ServiceKey {
    fn from(info: &ServiceInfo) -> Self {
        Self::new(&info.namespace, &info.name, &info.port_name)
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port_name)
    }
}

/// What the balancer knows about one endpoint at one moment.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct EndpointSnapshot {
    /// Requests in flight.
    pub in_flight: u32,
    /// The latency estimate as stored (before idle decay), when one was measured.
    pub latency: Option<Duration>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Whether it is ejected now.
    pub ejected: bool,
    /// Remaining ejection time.
    pub ejected_for: Duration,
    /// Ejections so far (drives the backoff; decays after a healthy period).
    pub ejections: u32,
    /// Time since a request was last sent to it.
    pub idle: Option<Duration>,
}

/// Per-endpoint choice with load and health state that outlives a request.
///
/// Long-lived and shared by every request (clone it: clones share the state). Build one
/// per proxy configuration; `docs/balancing.md` describes the policies.
#[derive(Clone)]
pub struct Balancer {
    core: Arc<Core>,
}

/// What a balancer shares with its requests.
pub(crate) struct Core {
    pub(crate) config: BalancerConfig,
    pub(crate) timeline: Timeline,
    pub(crate) decay_ns: f64,
    pub(crate) default_rtt_ns: f64,
    pub(crate) tracked: AtomicUsize,
    services: RwLock<HashMap<u64, Vec<Arc<ServiceState>>, RandomState>>,
    hasher: RandomState,
    seed: u64,
    services_created: AtomicU64,
    next_sweep: AtomicU64,
}

/// The state of one Service.
pub(crate) struct ServiceState {
    pub(crate) key: ServiceKey,
    pub(crate) stats: Arc<ServiceStats>,
    last_used: AtomicU64,
    table: Mutex<Table>,
}

impl ServiceState {
    pub(crate) fn lock_table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Balancer {
    /// A balancer on the system clock.
    pub fn new(config: BalancerConfig) -> Self {
        Self::on_clock(config, Arc::new(SystemClock))
    }

    /// A balancer reading time from `clock` (tests drive a `ManualClock`).
    #[cfg(any(test, feature = "test-util"))]
    #[doc(hidden)]
    pub fn with_clock(config: BalancerConfig, clock: Arc<dyn Clock>) -> Self {
        Self::on_clock(config, clock)
    }

    fn on_clock(config: BalancerConfig, clock: Arc<dyn Clock>) -> Self {
        let seed = config.seed.unwrap_or_else(|| {
            use rand::RngCore;
            SmallRng::from_os_rng().next_u64()
        });
        let decay_ns = (nanos(config.ewma_decay) as f64).max(1.0);
        let default_rtt_ns = nanos(config.default_rtt) as f64;
        Self {
            core: Arc::new(Core {
                timeline: Timeline::new(clock),
                decay_ns,
                default_rtt_ns,
                tracked: AtomicUsize::new(0),
                services: RwLock::new(HashMap::default()),
                hasher: RandomState::default(),
                seed,
                services_created: AtomicU64::new(0),
                next_sweep: AtomicU64::new(0),
                config,
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &BalancerConfig {
        &self.core.config
    }

    /// The failover plan of one request to `target`, from client address `client` (used
    /// for ClientIP affinity). Iterate it for the candidates to try; see [`Attempts`].
    pub(crate) fn plan<'a>(&'a self, target: &'a Target, client: Option<IpAddr>) -> Attempts<'a> {
        let service = match &target.service {
            Some(info) if !target.candidates.is_empty() => {
                Some(self.core.service(info, self.core.timeline.coarse()))
            }
            _ => None,
        };
        Attempts::new(&self.core, target, service, client)
    }

    /// The index of the candidate the balancer picks first for `target` (benchmarks).
    #[cfg(feature = "test-util")]
    #[doc(hidden)]
    pub fn choose(&self, target: &Target, client: Option<IpAddr>) -> Option<usize> {
        self.plan(target, client).next().map(|a| a.index())
    }

    /// One request's whole accounting: choose, start and record a success (benchmarks).
    /// Returns the chosen candidate's index.
    #[cfg(feature = "test-util")]
    #[doc(hidden)]
    pub async fn choose_and_complete(
        &self,
        target: &Target,
        client: Option<IpAddr>,
    ) -> Option<usize> {
        let attempt = self.plan(target, client).next()?;
        let index = attempt.index();
        attempt.start().await.ok()?.success();
        Some(index)
    }

    /// Endpoints with state, over all Services.
    pub fn tracked_endpoints(&self) -> usize {
        self.core.tracked.load(Ordering::Acquire)
    }

    /// Services with state.
    pub fn tracked_services(&self) -> usize {
        self.core.read_services().values().map(Vec::len).sum()
    }

    /// Client addresses remembered for ClientIP affinity by `service`.
    pub fn affinity_clients(&self, service: &ServiceKey) -> usize {
        self.core
            .find(service)
            .map_or(0, |s| s.lock_table().affinity.len())
    }

    /// Endpoints of `service` currently ejected (or on probation after an ejection).
    pub fn ejected_endpoints(&self, service: &ServiceKey) -> u32 {
        self.core.find(service).map_or(0, |s| s.stats.ejected())
    }

    /// What is known about endpoint `addr` of `service`, if it has state.
    pub fn endpoint(&self, service: &ServiceKey, addr: SocketAddr) -> Option<EndpointSnapshot> {
        let state = self.core.find(service)?;
        let table = state.lock_table();
        let endpoint = table.by_key(&EndpointKey::Addr(addr))?;
        let now = self.core.timeline.now();
        let health = endpoint.lock_health();
        let until = endpoint.ejected_until();
        let last_used = endpoint.last_used();
        Some(EndpointSnapshot {
            in_flight: endpoint.in_flight(),
            latency: endpoint
                .stored_estimate()
                .map(|ns| Duration::from_nanos(ns as u64)),
            consecutive_failures: health.consecutive_failures,
            ejected: until > now,
            ejected_for: Duration::from_nanos(until.saturating_sub(now)),
            ejections: health.ejections,
            idle: (last_used != 0).then(|| Duration::from_nanos(now.saturating_sub(last_used))),
        })
    }

    /// Forgets Services idle for longer than
    /// [`service_idle_timeout`](BalancerConfig::service_idle_timeout); also runs on its
    /// own from the choices it makes once per timeout. Returns how many were forgotten.
    pub fn sweep(&self) -> usize {
        self.core.sweep(self.core.timeline.now())
    }
}

impl Core {
    fn read_services(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Vec<Arc<ServiceState>>, RandomState>> {
        self.services.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn hash(&self, namespace: &str, name: &str, port_name: &str) -> u64 {
        self.hasher.hash_one((namespace, name, port_name))
    }

    fn find(&self, key: &ServiceKey) -> Option<Arc<ServiceState>> {
        let hash = self.hash(&key.namespace, &key.name, &key.port_name);
        let services = self.read_services();
        services.get(&hash)?.iter().find(|s| s.key == *key).cloned()
    }

    /// The state of the Service behind `info`, created when missing.
    fn service(&self, info: &ServiceInfo, now: u64) -> Arc<ServiceState> {
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now >= due {
            let next = now.saturating_add(nanos(self.config.service_idle_timeout).max(1));
            if self
                .next_sweep
                .compare_exchange(due, next, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.sweep(now);
            }
        }
        let hash = self.hash(&info.namespace, &info.name, &info.port_name);
        {
            let services = self.read_services();
            if let Some(state) = services
                .get(&hash)
                .and_then(|l| l.iter().find(|s| s.key.is(info)))
            {
                state.last_used.store(now, Ordering::Relaxed);
                return Arc::clone(state);
            }
        }
        let mut services = self
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let list = services.entry(hash).or_default();
        if let Some(state) = list.iter().find(|s| s.key.is(info)) {
            return Arc::clone(state);
        }
        let number = self.services_created.fetch_add(1, Ordering::Relaxed);
        let rng = SmallRng::seed_from_u64(self.seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let state = Arc::new(ServiceState {
            key: ServiceKey::from(info),
            stats: Arc::new(ServiceStats::new()),
            last_used: AtomicU64::new(now),
            table: Mutex::new(Table::new(
                rng,
                self.config.policy,
                self.config.max_affinity_clients,
            )),
        });
        list.push(Arc::clone(&state));
        state
    }

    /// Forgets idle Services; schedules the next sweep.
    fn sweep(&self, now: u64) -> usize {
        let timeout = nanos(self.config.service_idle_timeout);
        let mut services = self
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut forgotten = 0;
        services.retain(|_, list| {
            list.retain(|state| {
                let idle = now.saturating_sub(state.last_used.load(Ordering::Relaxed)) >= timeout;
                let mut table = state.lock_table();
                if idle && !table.busy() {
                    let cleared = table.clear();
                    let _ = self
                        .tracked
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            Some(n.saturating_sub(cleared))
                        });
                    forgotten += 1;
                    false
                } else {
                    true
                }
            });
            !list.is_empty()
        });
        forgotten
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("config", &self.core.config)
            .field("tracked_endpoints", &self.tracked_endpoints())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceState")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
