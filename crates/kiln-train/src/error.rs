//! Errors of the trainer. Each names what failed and where (recipe key, file, step).

use std::path::PathBuf;

/// Result alias of kiln-train.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Recipe(#[from] crate::recipe::RecipeError),
    #[error("{key}: {message}")]
    Config { key: String, message: String },
    #[error("{what}: {source}")]
    Data {
        what: String,
        #[source]
        source: kiln_data::DataError,
    },
    #[error(transparent)]
    Model(#[from] kiln_model::ModelError),
    #[error(transparent)]
    Rollout(#[from] kiln_rollout::RolloutError),
    #[error(transparent)]
    Optim(#[from] kiln_optim::OptimError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    #[error("step {step}: {message}")]
    Diverged { step: usize, message: String },
}

impl TrainError {
    pub(crate) fn recipe(key: &str, message: impl Into<String>) -> Self {
        Self::Config {
            key: key.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn data(what: &str, source: kiln_data::DataError) -> Self {
        Self::Data {
            what: what.to_string(),
            source,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
