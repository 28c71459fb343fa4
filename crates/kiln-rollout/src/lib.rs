//! kiln-rollout
