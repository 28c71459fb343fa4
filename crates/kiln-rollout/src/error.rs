//! The error type of kiln-rollout. Messages name the parameter, prompt or input line involved.

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// A sampling parameter out of range (`SamplingParams::validate`).
    #[error("invalid sampling parameter: {0}")]
    Params(String),
    /// A prompt the engine cannot run (empty, too long for the context, unknown token id).
    #[error("invalid prompt {index}: {message}")]
    Prompt { index: usize, message: String },
    /// A tree-rollout parameter out of range (`TreeParams::validate`) or embeddings that do not
    /// fit the policy.
    #[error("invalid tree parameter: {0}")]
    Tree(String),
    /// A fork request that does not fit its parent.
    #[error("invalid fork request {index}: {message}")]
    Fork { index: usize, message: String },
    /// A line of a JSONL input that could not be used.
    #[error("input line {line}: {message}")]
    InputLine { line: usize, message: String },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] kiln_model::ModelError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = RolloutError> = std::result::Result<T, E>;
