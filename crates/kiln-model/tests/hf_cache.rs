//! A Hugging Face repo id resolves through the local HF cache without network access.
//! (Own test binary: it sets HF_HOME for the whole process.)

mod common;

use common::*;
use kiln_model::hub::{ModelLocation, resolve};

#[test]
fn repo_id_resolves_to_the_cached_snapshot() {
    let home = std::env::temp_dir().join(format!("kiln-hf-home-{}", std::process::id()));
    let repo = home.join("hub/models--kiln-test--tiny-llama");
    let snapshot = repo.join("snapshots/0123456789abcdef");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-llama").join(f), snapshot.join(f)).unwrap();
    }
    // SAFETY: this test binary has this one test; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("HF_HOME", &home) };
    let loc = resolve("kiln-test/tiny-llama").unwrap();
    assert_eq!(loc, ModelLocation::HfDir(snapshot.clone()));

    // A repo that is neither cached nor reachable is a clear error naming the repo and cache.
    let e = resolve("kiln-test/not-cached").unwrap_err().to_string();
    assert!(
        e.contains("kiln-test/not-cached") && e.contains("config.json"),
        "{e}"
    );
    std::fs::remove_dir_all(&home).ok();
}
