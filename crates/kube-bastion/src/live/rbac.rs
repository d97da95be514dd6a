//! [`KubeRbac`]: an [`RbacAuthorizer`]'s policy kept up to date by kube-rs watchers.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, watcher as watch_stream};
use kube::{Api, Client, Resource, ResourceExt as _};
use kube_bastion_core::RbacPolicy;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::RbacAuthorizer;

/// The four RBAC kinds, each by `(namespace, name)` (`""` for cluster-scoped kinds).
#[derive(Default)]
struct Store {
    roles: BTreeMap<(String, String), Role>,
    cluster_roles: BTreeMap<(String, String), ClusterRole>,
    role_bindings: BTreeMap<(String, String), RoleBinding>,
    cluster_role_bindings: BTreeMap<(String, String), ClusterRoleBinding>,
}

impl Store {
    fn policy(&self) -> RbacPolicy {
        RbacPolicy::new(
            self.roles.values().cloned(),
            self.cluster_roles.values().cloned(),
            self.role_bindings.values().cloned(),
            self.cluster_role_bindings.values().cloned(),
        )
    }
}

/// An RBAC kind and where the store keeps it.
trait RbacKind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static
{
    fn objects(store: &mut Store) -> &mut BTreeMap<(String, String), Self>;
}

macro_rules! rbac_kind {
    ($kind:ty, $field:ident) => {
        impl RbacKind for $kind {
            fn objects(store: &mut Store) -> &mut BTreeMap<(String, String), Self> {
                &mut store.$field
            }
        }
    };
}
rbac_kind!(Role, roles);
rbac_kind!(ClusterRole, cluster_roles);
rbac_kind!(RoleBinding, role_bindings);
rbac_kind!(ClusterRoleBinding, cluster_role_bindings);

fn key<K: Resource>(object: &K) -> (String, String) {
    (object.namespace().unwrap_or_default(), object.name_any())
}

/// What the watchers share.
struct Shared {
    authorizer: Arc<RbacAuthorizer>,
    store: Mutex<Store>,
    /// Watchers that have not finished their first list.
    unsynced: AtomicUsize,
    ready: watch::Sender<bool>,
    events: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    /// Applies one batch of events of kind `K`; `listing` holds a list in progress.
    /// Returns whether this batch finished the first list.
    fn apply<K: RbacKind>(
        &self,
        events: Vec<Result<Event<K>, watcher::Error>>,
        listing: &mut Option<BTreeMap<(String, String), K>>,
    ) -> bool {
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        let mut changed = false;
        let mut listed = false;
        for event in events {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(kind = %K::kind(&()), %error, "RBAC watch error");
                    continue;
                }
            };
            self.events.fetch_add(1, Ordering::Relaxed);
            match event {
                Event::Init => *listing = Some(BTreeMap::new()),
                Event::InitApply(object) => {
                    if let Some(listing) = listing {
                        listing.insert(key(&object), slim(object));
                    }
                }
                Event::InitDone => {
                    if let Some(listed_objects) = listing.take() {
                        *K::objects(&mut store) = listed_objects;
                        changed = true;
                    }
                    listed = true;
                }
                Event::Apply(object) => {
                    K::objects(&mut store).insert(key(&object), slim(object));
                    changed = true;
                }
                Event::Delete(object) => {
                    changed |= K::objects(&mut store).remove(&key(&object)).is_some();
                }
            }
        }
        if changed {
            let policy = store.policy();
            tracing::debug!(
                kind = %K::kind(&()),
                bindings = policy.bindings(),
                "RBAC policy updated"
            );
            self.authorizer.update(policy);
        }
        listed
    }
}

/// Drops `managedFields` and the last-applied annotation.
fn slim<K: Resource>(mut object: K) -> K {
    super::kind::slim_meta(object.meta_mut());
    object
}

/// Keeps an [`RbacAuthorizer`]'s policy equal to the cluster's Roles, ClusterRoles,
/// RoleBindings and ClusterRoleBindings, with one kube-rs watcher per kind (cargo feature
/// `kube`): kube-apiserver's RBAC authorizer reads the same objects from its informers.
///
/// Every batch of changes rebuilds the policy (its cost grows with the number of RBAC
/// objects; RBAC objects change rarely) and swaps it in atomically; requests already
/// deciding keep the policy they started with. Until every watcher has finished its first
/// list, [`is_synced`](Self::is_synced) is `false` and the policy may lack objects; RBAC only
/// allows, so a partial policy refuses requests it would later allow, never the reverse. A
/// watch error keeps the last policy while kube-rs's backoff retries and relists.
///
/// The watchers need `list` and `watch` on `roles`, `clusterroles`, `rolebindings` and
/// `clusterrolebindings` in the `rbac.authorization.k8s.io` group, cluster-wide. They stop
/// when the last clone is dropped.
///
/// ```no_run
/// # async fn doc() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use kube_bastion::{KubeRbac, RbacAuthorizer};
///
/// let client = kube::Client::try_default().await?;
/// let authorizer = Arc::new(RbacAuthorizer::new(Default::default()));
/// let rbac = KubeRbac::watch(client, Arc::clone(&authorizer), Default::default());
/// rbac.ready().await;
/// // `authorizer` goes into `ProxyConfig::builder(..).authorizer(..)`.
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KubeRbac {
    shared: Arc<Shared>,
    /// Held for its `Drop`: the watchers stop with the last clone.
    _tasks: Arc<Tasks>,
}

/// The watcher tasks; aborted when the last [`KubeRbac`] clone goes.
#[derive(Default)]
struct Tasks(Vec<AbortHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl fmt::Debug for KubeRbac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeRbac")
            .field("synced", &self.is_synced())
            .field("authorizer", &self.shared.authorizer)
            .finish_non_exhaustive()
    }
}

impl KubeRbac {
    /// Starts the four watchers on `client` with `config` (label selectors, page size, ...),
    /// each with kube-rs's default backoff; call it inside a tokio runtime.
    pub fn watch(client: Client, authorizer: Arc<RbacAuthorizer>, config: watcher::Config) -> Self {
        let shared = Self::shared(authorizer);
        let tasks = vec![
            spawn::<Role>(&shared, &client, &config),
            spawn::<ClusterRole>(&shared, &client, &config),
            spawn::<RoleBinding>(&shared, &client, &config),
            spawn::<ClusterRoleBinding>(&shared, &client, &config),
        ];
        KubeRbac {
            shared,
            _tasks: Arc::new(Tasks(tasks)),
        }
    }

    fn shared(authorizer: Arc<RbacAuthorizer>) -> Arc<Shared> {
        let (ready, _) = watch::channel(false);
        Arc::new(Shared {
            authorizer,
            store: Mutex::default(),
            unsynced: AtomicUsize::new(4),
            ready,
            events: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// The authorizer whose policy the watchers keep.
    pub fn authorizer(&self) -> &Arc<RbacAuthorizer> {
        &self.shared.authorizer
    }

    /// Whether every watcher has finished its first list.
    pub fn is_synced(&self) -> bool {
        self.shared.unsynced.load(Ordering::Acquire) == 0
    }

    /// Resolves once [`is_synced`](Self::is_synced) is true.
    pub async fn ready(&self) {
        let mut ready = self.shared.ready.subscribe();
        // The sender lives in `self.shared`, so `wait_for` cannot fail while `self` lives.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Watch events applied so far, and watch errors (each retried by the backoff).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.events.load(Ordering::Relaxed),
            self.shared.errors.load(Ordering::Relaxed),
        )
    }
}

fn spawn<K: RbacKind>(
    shared: &Arc<Shared>,
    client: &Client,
    config: &watcher::Config,
) -> AbortHandle {
    let stream = watch_stream(Api::<K>::all(client.clone()), config.clone()).default_backoff();
    tokio::spawn(run(Arc::clone(shared), stream)).abort_handle()
}

/// Applies one kind's events until the stream ends.
async fn run<K: RbacKind>(
    shared: Arc<Shared>,
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>>,
) {
    let mut stream = pin!(stream.ready_chunks(256));
    let mut listing = None;
    let mut synced = false;
    while let Some(events) = stream.next().await {
        if shared.apply(events, &mut listing) && !synced {
            synced = true;
            let left = shared
                .unsynced
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            if left == Ok(1) {
                shared.ready.send_replace(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::stream;
    use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube_bastion_core::{Attributes, RbacDecision, RbacRequest};

    use super::*;

    fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: namespace.map(str::to_owned),
            ..ObjectMeta::default()
        }
    }

    fn role() -> Role {
        Role {
            metadata: meta(Some("shop"), "proxy"),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["pods/proxy".into()]),
                verbs: vec!["get".into()],
                ..PolicyRule::default()
            }]),
        }
    }

    fn binding(user: &str) -> RoleBinding {
        RoleBinding {
            metadata: meta(Some("shop"), &format!("proxy-{user}")),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: "proxy".into(),
            },
            subjects: Some(vec![Subject {
                kind: "User".into(),
                name: user.into(),
                ..Subject::default()
            }]),
        }
    }

    fn allows(shared: &Shared, user: &str) -> bool {
        let attributes = Attributes {
            verb: "get",
            api_group: "",
            api_version: "v1",
            resource: "pods",
            subresource: "proxy",
            namespace: Some("shop".into()),
            name: "web".into(),
            upgrade: false,
        };
        shared
            .authorizer
            .policy()
            .authorize(&RbacRequest::proxy(&attributes, user, &[]))
            == RbacDecision::Allow
    }

    fn listed<K>(objects: Vec<K>) -> Vec<Result<Event<K>, watcher::Error>> {
        let mut events = vec![Ok(Event::Init)];
        events.extend(objects.into_iter().map(|o| Ok(Event::InitApply(o))));
        events.push(Ok(Event::InitDone));
        events
    }

    #[tokio::test]
    async fn lists_then_events_keep_the_policy() {
        let shared = KubeRbac::shared(Arc::new(RbacAuthorizer::new(RbacPolicy::default())));
        let rbac = KubeRbac {
            shared: Arc::clone(&shared),
            _tasks: Arc::default(),
        };
        run(Arc::clone(&shared), stream::iter(listed(vec![role()]))).await;
        run(
            Arc::clone(&shared),
            stream::iter(listed(vec![binding("alice")])),
        )
        .await;
        assert!(allows(&shared, "alice"));
        assert!(!rbac.is_synced(), "two kinds still listing");
        run(
            Arc::clone(&shared),
            stream::iter(listed(Vec::<ClusterRole>::new())),
        )
        .await;
        run(
            Arc::clone(&shared),
            stream::iter(listed(Vec::<ClusterRoleBinding>::new())),
        )
        .await;
        assert!(rbac.is_synced());
        rbac.ready().await;

        // A new binding, a deleted one, and a relist that no longer holds bob.
        let events = vec![
            Ok(Event::Apply(binding("bob"))),
            Ok(Event::Delete(binding("alice"))),
            Err(watcher::Error::NoResourceVersion),
        ];
        run(Arc::clone(&shared), stream::iter(events)).await;
        assert!(allows(&shared, "bob") && !allows(&shared, "alice"));
        assert_eq!(rbac.counts(), (3 + 3 + 2 + 2 + 2, 1));
        run(
            Arc::clone(&shared),
            stream::iter(listed(vec![binding("carol")])),
        )
        .await;
        assert!(allows(&shared, "carol") && !allows(&shared, "bob"));
    }
}
