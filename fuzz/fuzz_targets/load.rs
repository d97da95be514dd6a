//! Loading cluster files must report errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kube_bastion_core::cluster::parse_objects(text);
    }
});
