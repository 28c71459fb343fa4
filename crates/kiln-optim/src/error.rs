//! Errors of kiln-optim.

use thiserror::Error;

/// Everything that can go wrong in kiln-optim. Bad input gets a message naming the argument.
#[derive(Debug, Error)]
pub enum OptimError {
    /// Two inputs that must agree in length or shape do not.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape {
        /// Which argument.
        what: &'static str,
        /// Expected size.
        expected: usize,
        /// Actual size.
        got: usize,
    },
    /// A configuration value is out of its valid range.
    #[error("invalid config `{field}`: {reason}")]
    Config {
        /// Field name.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A gradient for a named parameter has a rank kiln-optim does not handle (1..=6).
    #[error("parameter `{path}` has unsupported rank {rank}")]
    Rank {
        /// Parameter path.
        path: String,
        /// Its rank.
        rank: usize,
    },
    /// A ROSE rollout tree (parent links and branch positions) that does not describe a tree.
    #[error("invalid ROSE tree: group {group}, response {response}: {reason}")]
    Tree {
        /// Which group of the batch (0 for a single group).
        group: usize,
        /// The response's index inside its group (generation order).
        response: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing optimizer state failed.
    #[error("optimizer state {path}: {reason}")]
    State {
        /// The file.
        path: String,
        /// The cause.
        reason: String,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, OptimError>;

pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(OptimError::Shape {
            what,
            expected,
            got,
        })
    }
}
