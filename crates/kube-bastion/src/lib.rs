//! kube-bastion: kube-apiserver's `pods/proxy`, `services/proxy` and `nodes/proxy` as a
//! tower `Layer`/`Service` for custom apiservers.
//!
//! Re-exports the pure core ([`kube_bastion_core`]) at the root.

pub mod balance;
pub mod rewrite;
pub mod upgrade;

pub use kube_bastion_core::*;
