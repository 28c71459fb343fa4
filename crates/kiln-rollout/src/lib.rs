//! kiln-rollout
pub use kiln_model::TokenBatch;
