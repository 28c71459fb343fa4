//! kiln-data: data sets, prompt templates, synthetic task generators and samplers for kiln.
//!
//! - [`Example`] `{ id, domain, prompt, reference, meta }` is what flows to the rollout engine;
//!   [`Prompt`] is raw text or chat messages (rendered by kiln-model), [`Reference`] is what the
//!   verifiers in kiln-reward consume.
//! - Loaders for the files in `shared/data` ([`load_math500`], [`load_math_train`],
//!   [`load_countdown`], [`load_gsm8k`]) and generic [`JsonlLoader`] / `ParquetLoader` driven by
//!   a [`FieldMap`]. Errors name the file, the line (or row) and the field.
//! - Prompt templates ([`countdown_prompt`], [`math_prompt`]).
//! - Seeded generators ([`CountdownGenerator`], [`ArithmeticGenerator`],
//!   [`InstructionGenerator`]).
//! - Preference pairs for reward models ([`load_preferences`], [`InstructionPairGenerator`]).
//! - Samplers ([`EpochSampler`], [`DomainMixer`], [`Schedule`]) with exact resume.
//!
//! No burn here: plain CPU string and number work.
//!
//! ```
//! use kiln_data::*;
//!
//! // Two unbounded synthetic sources for a tiny CPU model, mixed 3:1.
//! let cd = CountdownGenerator::new(CountdownConfig { min_count: 3, max_count: 3, ..Default::default() }, 7)?;
//! let ar = ArithmeticGenerator::new(ArithmeticConfig::default(), 7)?;
//! let mut mixer = DomainMixer::new(
//!     vec![(MixSource::new("countdown", cd), 3.0), (MixSource::new("arithmetic", ar), 1.0)],
//!     1234,
//! )?;
//! let batch: Vec<Example> = mixer.next_batch(8)?;
//! assert_eq!(batch.len(), 8);
//!
//! // Save with the checkpoint; a resumed run continues with exactly the same examples.
//! let state = serde_json::to_string(&mixer.state()).unwrap();
//! let next = mixer.next_batch(4)?;
//! # let cd = CountdownGenerator::new(CountdownConfig { min_count: 3, max_count: 3, ..Default::default() }, 7)?;
//! # let ar = ArithmeticGenerator::new(ArithmeticConfig::default(), 7)?;
//! # let mut resumed = DomainMixer::new(
//! #     vec![(MixSource::new("countdown", cd), 3.0), (MixSource::new("arithmetic", ar), 1.0)],
//! #     1234,
//! # )?;
//! resumed.restore(&serde_json::from_str(&state).unwrap())?;
//! assert_eq!(resumed.next_batch(4)?, next);
//! # Ok::<(), DataError>(())
//! ```

pub mod datasets;
pub mod error;
pub mod example;
pub mod instructions;
pub mod loader;
pub mod preferences;
pub mod sampler;
pub mod synth;
pub mod templates;

pub use datasets::{
    DATA_DIR_ENV, default_data_dir, load_countdown, load_countdown_with, load_gsm8k,
    load_gsm8k_with, load_math_train, load_math_train_with, load_math500, load_math500_with,
};
pub use error::{DataError, Loc, Result};
pub use example::{ChatMessage, Example, Prompt, Reference, domain};
pub use instructions::{Instruction, InstructionConfig, InstructionGenerator, LetterCase};
#[cfg(feature = "parquet")]
pub use loader::ParquetLoader;
pub use loader::{
    AnswerExtract, Dropped, FieldMap, JsonlLoader, Loaded, PromptTemplate, ReferenceField,
    last_boxed, lookup,
};
pub use preferences::{BrokenRule, InstructionPairGenerator, PreferencePair, load_preferences};
pub use sampler::{
    Cursor, DomainMixer, Draw, EpochSampler, ExampleSource, MixSource, Phase, PhaseLength,
    Schedule, ScheduleState, derive_seed,
};
pub use synth::{
    ArithOp, ArithmeticConfig, ArithmeticGenerator, COUNTDOWN_MAX_NUMS, CountdownConfig,
    CountdownGenerator, solve_countdown,
};
pub use templates::{
    COUNTDOWN_ASSISTANT_PREFILL, COUNTDOWN_SYSTEM, CountdownTemplate, MATH_INSTRUCTION,
    MathTemplate, countdown_prompt, math_prompt,
};
