//! `kube-bastion`: a small custom apiserver embedding the kube-bastion proxy.

fn main() {}
