//! Loader errors: each bad checkpoint gives an error that names the file and, where there is
//! one, the tensor; none panics.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use kiln_model::{Model, ModelError, loader};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-loader-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of the tiny-llama fixture that tests can damage.
fn tiny_copy(tag: &str) -> PathBuf {
    let d = temp_dir(tag);
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-llama").join(f), d.join(f)).unwrap();
    }
    d
}

fn load_net(dir: &Path) -> Result<(), ModelError> {
    loader::load_network(dir, &device()).map(|_| ())
}

#[test]
fn missing_files_are_named() {
    let d = temp_dir("missing");
    let e = Model::load(d.to_str().unwrap(), &device()).unwrap_err();
    assert!(e.to_string().contains("config.json"), "{e}");
    let e = Model::load("/nonexistent/model.gguf", &device()).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/model.gguf"), "{e}");
    let d = tiny_copy("noweights");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    let e = load_net(&d).unwrap_err();
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn truncated_safetensors_is_an_error_naming_the_file() {
    let d = tiny_copy("truncated");
    let path = d.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for cut in [4, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = load_net(&d).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("model.safetensors"), "cut {cut}: {msg}");
        assert!(
            matches!(e, ModelError::Safetensors { .. }),
            "cut {cut}: {msg}"
        );
    }
}

#[test]
fn unknown_architecture_is_named() {
    let d = tiny_copy("arch");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        cfg.replace("\"llama\"", "\"gpt_neox\""),
    )
    .unwrap();
    let e = load_net(&d).unwrap_err();
    assert!(matches!(e, ModelError::UnknownArchitecture { .. }), "{e}");
    assert!(
        e.to_string().contains("gpt_neox") && e.to_string().contains("config.json"),
        "{e}"
    );
}

#[test]
fn shape_mismatch_names_the_tensor() {
    let d = tiny_copy("shape");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        cfg.replace("\"intermediate_size\": 128", "\"intermediate_size\": 96"),
    )
    .unwrap();
    let e = load_net(&d).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ModelError::ShapeMismatch { .. }), "{msg}");
    assert!(msg.contains("model.layers.0.mlp.gate_proj.weight"), "{msg}");
    assert!(
        msg.contains("[96, 64]") && msg.contains("[128, 64]"),
        "{msg}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let d = tiny_copy("missing-tensor");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        cfg.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"),
    )
    .unwrap();
    let e = load_net(&d).unwrap_err();
    assert!(matches!(e, ModelError::MissingTensor { .. }), "{e}");
    assert!(e.to_string().contains("model.layers.2."), "{e}");
}

#[test]
fn truncated_gguf_is_an_error_naming_the_file() {
    let src = kiln_model::hub::smollm2_gguf().unwrap();
    let d = temp_dir("gguf");
    let bytes = std::fs::read(&src).unwrap();
    let path = d.join("cut.gguf");
    // Cut inside the metadata, and inside the tensor data.
    for cut in [16, 4096, bytes.len() / 2] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = match Model::load(path.to_str().unwrap(), &device()) {
            Ok(_) => panic!("cut {cut}: a truncated GGUF loaded"),
            Err(e) => e,
        };
        assert!(e.to_string().contains("cut.gguf"), "cut {cut}: {e}");
    }
}
