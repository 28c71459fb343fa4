//! Samplers: shuffled epochs with a resumable cursor ([`EpochSampler`]), weighted domain mixing
//! ([`DomainMixer`]) and phase schedules ([`Schedule`]). All deterministic from a seed (ChaCha8
//! streams, own integer sampling: stable across platforms and `rand` versions), all with a small
//! serialisable state so a resumed run continues exactly where it stopped.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::example::Example;
use crate::instructions::InstructionGenerator;
use crate::synth::{ArithmeticGenerator, CountdownGenerator, item_rng, uniform_below};

/// Something examples can be drawn from by index: a loaded data set, or a generator.
pub trait ExampleSource: Send + Sync {
    /// How many examples there are; `None` for an unbounded generator.
    fn num_examples(&self) -> Option<u64>;
    /// Example `index` (`index < num_examples()` when bounded).
    fn get(&self, index: u64) -> Result<Example>;
}

fn out_of_range(index: u64, len: usize) -> DataError {
    DataError::Config(format!("example index {index} out of range (len {len})"))
}

impl ExampleSource for Vec<Example> {
    fn num_examples(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
    fn get(&self, index: u64) -> Result<Example> {
        self.as_slice()
            .get(index as usize)
            .cloned()
            .ok_or_else(|| out_of_range(index, self.len()))
    }
}

impl ExampleSource for [Example] {
    fn num_examples(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
    fn get(&self, index: u64) -> Result<Example> {
        <[Example]>::get(self, index as usize)
            .cloned()
            .ok_or_else(|| out_of_range(index, self.len()))
    }
}

impl<T: ExampleSource + ?Sized> ExampleSource for Arc<T> {
    fn num_examples(&self) -> Option<u64> {
        (**self).num_examples()
    }
    fn get(&self, index: u64) -> Result<Example> {
        (**self).get(index)
    }
}

impl ExampleSource for CountdownGenerator {
    fn num_examples(&self) -> Option<u64> {
        None
    }
    fn get(&self, index: u64) -> Result<Example> {
        self.example(index)
    }
}

impl ExampleSource for ArithmeticGenerator {
    fn num_examples(&self) -> Option<u64> {
        None
    }
    fn get(&self, index: u64) -> Result<Example> {
        Ok(self.example(index))
    }
}

impl ExampleSource for InstructionGenerator {
    fn num_examples(&self) -> Option<u64> {
        None
    }
    fn get(&self, index: u64) -> Result<Example> {
        Ok(self.example(index))
    }
}

/// SplitMix64 finaliser.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed derived from `seed` and a label (FNV-1a of the label, mixed): sub-streams that do not
/// shift when other labels are added.
pub fn derive_seed(seed: u64, label: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    mix64(seed ^ mix64(h))
}

/// Where an [`EpochSampler`] stands: the next draw is item `position` of epoch `epoch`'s order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor {
    /// Epochs completed.
    pub epoch: u64,
    /// Draws made in the current epoch.
    pub position: u64,
}

/// Draws indices `0..len` epoch by epoch, each epoch a fresh seeded permutation (or in order).
/// Batches run across epoch boundaries.
#[derive(Clone, Debug)]
pub struct EpochSampler {
    len: usize,
    seed: u64,
    shuffle: bool,
    cursor: Cursor,
    perm: Vec<usize>,
    perm_epoch: Option<u64>,
}

impl EpochSampler {
    /// Shuffled epochs over `len` items.
    pub fn new(len: usize, seed: u64) -> Result<Self> {
        Self::build(len, seed, true)
    }

    /// Epochs in file order (evaluation).
    pub fn sequential(len: usize) -> Result<Self> {
        Self::build(len, 0, false)
    }

    fn build(len: usize, seed: u64, shuffle: bool) -> Result<Self> {
        if len == 0 {
            return Err(DataError::Config(
                "cannot sample from an empty data set".into(),
            ));
        }
        Ok(Self {
            len,
            seed,
            shuffle,
            cursor: Cursor::default(),
            perm: Vec::new(),
            perm_epoch: None,
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (an empty sampler cannot be built).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Where the sampler stands.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Moves to a saved cursor (`position <= len`; `position == len` means the next epoch).
    pub fn set_cursor(&mut self, cursor: Cursor) -> Result<()> {
        if cursor.position > self.len as u64 {
            return Err(DataError::Config(format!(
                "cursor position {} past the end of a {}-item epoch",
                cursor.position, self.len
            )));
        }
        self.cursor = cursor;
        self.normalise();
        Ok(())
    }

    fn normalise(&mut self) {
        if self.cursor.position == self.len as u64 {
            self.cursor = Cursor {
                epoch: self.cursor.epoch + 1,
                position: 0,
            };
        }
    }

    /// The order of epoch `epoch` (a Fisher-Yates shuffle on ChaCha8 stream `epoch`).
    pub fn permutation(&self, epoch: u64) -> Vec<usize> {
        let mut p: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            let mut rng = item_rng(self.seed, epoch);
            for i in (1..self.len).rev() {
                let j = uniform_below(&mut rng, i as u64 + 1) as usize;
                p.swap(i, j);
            }
        }
        p
    }

    /// The next index.
    pub fn next_index(&mut self) -> usize {
        if self.perm_epoch != Some(self.cursor.epoch) {
            self.perm = self.permutation(self.cursor.epoch);
            self.perm_epoch = Some(self.cursor.epoch);
        }
        let i = self.perm[self.cursor.position as usize];
        self.cursor.position += 1;
        self.normalise();
        i
    }

    /// The next `n` indices.
    pub fn next_indices(&mut self, n: usize) -> Vec<usize> {
        (0..n).map(|_| self.next_index()).collect()
    }

    /// The next `n` items of `data` (which must have `len` items).
    pub fn next_batch<'a, T>(&mut self, data: &'a [T], n: usize) -> Result<Vec<&'a T>> {
        if data.len() != self.len {
            return Err(DataError::Config(format!(
                "sampler built for {} items, given {}",
                self.len,
                data.len()
            )));
        }
        Ok(self.next_indices(n).into_iter().map(|i| &data[i]).collect())
    }
}

/// A named source in a mixer or schedule.
#[derive(Clone)]
pub struct MixSource {
    /// The name weights refer to (usually the domain, e.g. "countdown").
    pub name: String,
    /// Where examples come from.
    pub source: Arc<dyn ExampleSource>,
    /// Shuffle epochs (true) or walk the data in order (false). Unbounded sources are always
    /// walked in index order (a generator is already random).
    pub shuffle: bool,
}

impl MixSource {
    /// A shuffled source.
    pub fn new(name: impl Into<String>, source: impl ExampleSource + 'static) -> Self {
        Self {
            name: name.into(),
            source: Arc::new(source),
            shuffle: true,
        }
    }

    /// A source walked in order.
    pub fn in_order(mut self) -> Self {
        self.shuffle = false;
        self
    }
}

impl std::fmt::Debug for MixSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MixSource")
            .field("name", &self.name)
            .field("num_examples", &self.source.num_examples())
            .field("shuffle", &self.shuffle)
            .finish()
    }
}

/// How long a phase lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseLength {
    /// This many examples (a batch may straddle two phases).
    Examples(u64),
    /// This many `next_batch` calls (steps); a batch never straddles phases.
    Batches(u64),
}

/// One phase of a schedule: mixing weights by source name (missing names weigh 0), and a length
/// (`None`: forever). After the last phase's length is spent, the last phase goes on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Relative weights (normalised over the phase), by source name.
    pub weights: BTreeMap<String, f64>,
    /// How long the phase lasts.
    #[serde(default)]
    pub length: Option<PhaseLength>,
}

impl Phase {
    /// A phase drawing only from `name`.
    pub fn only(name: impl Into<String>, length: Option<PhaseLength>) -> Self {
        Self {
            weights: BTreeMap::from([(name.into(), 1.0)]),
            length,
        }
    }

    /// A phase mixing sources at the given ratios.
    pub fn mix<S: Into<String>>(
        weights: impl IntoIterator<Item = (S, f64)>,
        length: Option<PhaseLength>,
    ) -> Self {
        Self {
            weights: weights.into_iter().map(|(k, w)| (k.into(), w)).collect(),
            length,
        }
    }
}

/// One draw: which source and which of its examples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Draw {
    /// Index of the source (construction order).
    pub source: usize,
    /// Index of the example in that source.
    pub index: u64,
}

/// Saved position of a [`Schedule`] / [`DomainMixer`]; serialise it with the checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleState {
    /// The seed the schedule was built with (checked on restore).
    pub seed: u64,
    /// Examples drawn in all.
    pub draws: u64,
    /// `next_batch` calls in all.
    pub batches: u64,
    /// Current phase.
    pub phase: usize,
    /// Examples drawn in the current phase.
    pub phase_examples: u64,
    /// Batches drawn in the current phase.
    pub phase_batches: u64,
    /// Each source's cursor, by name (unbounded sources: epoch 0, position = next index).
    pub sources: BTreeMap<String, Cursor>,
}

enum Order {
    Epochs(EpochSampler),
    Stream(u64),
}

/// Sequential / mixed phases over named sources: "countdown for 200 steps, then 50/50 countdown
/// and math", "A for k examples then B". Each source keeps its own shuffled-epoch cursor across
/// phases (a source is never restarted). Which source each draw comes from is a weighted random
/// choice made from ChaCha8 stream `draw number` (resumable by construction).
pub struct Schedule {
    sources: Vec<MixSource>,
    orders: Vec<Order>,
    /// Per phase: cumulative normalised weights aligned with `sources`.
    cumulative: Vec<Vec<f64>>,
    phases: Vec<Phase>,
    seed: u64,
    mix_seed: u64,
    draws: u64,
    batches: u64,
    phase: usize,
    phase_examples: u64,
    phase_batches: u64,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("sources", &self.sources)
            .field("phases", &self.phases)
            .field("state", &self.state())
            .finish()
    }
}

impl Schedule {
    /// A schedule over `sources` (unique names) with `phases` (at least one).
    pub fn new(sources: Vec<MixSource>, phases: Vec<Phase>, seed: u64) -> Result<Self> {
        let cfg = |m: String| Err(DataError::Config(m));
        if sources.is_empty() {
            return cfg("a schedule needs at least one source".into());
        }
        if phases.is_empty() {
            return cfg("a schedule needs at least one phase".into());
        }
        let mut orders = Vec::with_capacity(sources.len());
        for (i, s) in sources.iter().enumerate() {
            if sources[..i].iter().any(|o| o.name == s.name) {
                return cfg(format!("duplicate source name `{}`", s.name));
            }
            orders.push(match s.source.num_examples() {
                Some(0) => return cfg(format!("source `{}` is empty", s.name)),
                Some(n) => {
                    let n = usize::try_from(n)
                        .map_err(|_| DataError::Config("source too large".into()))?;
                    let sampler = if s.shuffle {
                        EpochSampler::new(n, derive_seed(seed, &s.name))?
                    } else {
                        EpochSampler::sequential(n)?
                    };
                    Order::Epochs(sampler)
                }
                None => Order::Stream(0),
            });
        }
        let mut cumulative = Vec::with_capacity(phases.len());
        for (p, phase) in phases.iter().enumerate() {
            for (name, w) in &phase.weights {
                if !sources.iter().any(|s| &s.name == name) {
                    return cfg(format!("phase {p}: weight for unknown source `{name}`"));
                }
                if !w.is_finite() || *w < 0.0 {
                    return cfg(format!(
                        "phase {p}: weight of `{name}` must be finite and >= 0, got {w}"
                    ));
                }
            }
            let ws: Vec<f64> = sources
                .iter()
                .map(|s| phase.weights.get(&s.name).copied().unwrap_or(0.0))
                .collect();
            let total: f64 = ws.iter().sum();
            if total <= 0.0 {
                return cfg(format!("phase {p}: weights sum to 0"));
            }
            if matches!(
                phase.length,
                Some(PhaseLength::Examples(0) | PhaseLength::Batches(0))
            ) {
                return cfg(format!("phase {p}: zero length"));
            }
            let mut acc = 0.0;
            let mut cum: Vec<f64> = ws
                .iter()
                .map(|w| {
                    acc += w / total;
                    acc
                })
                .collect();
            // Close rounding gaps: from the last positive weight on, the sum is exactly 1, so
            // every u in [0, 1) lands on a positive-weight source.
            let last = ws.iter().rposition(|w| *w > 0.0).unwrap_or(0);
            cum[last..].iter_mut().for_each(|c| *c = 1.0);
            cumulative.push(cum);
        }
        Ok(Self {
            sources,
            orders,
            cumulative,
            phases,
            seed,
            mix_seed: derive_seed(seed, "kiln-data/mix"),
            draws: 0,
            batches: 0,
            phase: 0,
            phase_examples: 0,
            phase_batches: 0,
        })
    }

    /// Source A alone for its length, then B alone, ...: `stages` = (source name, length).
    pub fn sequential<S: Into<String>>(
        sources: Vec<MixSource>,
        stages: impl IntoIterator<Item = (S, Option<PhaseLength>)>,
        seed: u64,
    ) -> Result<Self> {
        let phases = stages.into_iter().map(|(n, l)| Phase::only(n, l)).collect();
        Self::new(sources, phases, seed)
    }

    /// The sources, in construction order.
    pub fn sources(&self) -> &[MixSource] {
        &self.sources
    }

    /// The phases.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// The current phase.
    pub fn phase(&self) -> usize {
        self.phase
    }

    fn advance_phase(&mut self) {
        self.phase += 1;
        self.phase_examples = 0;
        self.phase_batches = 0;
    }

    fn is_last(&self) -> bool {
        self.phase + 1 >= self.phases.len()
    }

    /// The next draw (source and index), without fetching the example.
    pub fn next_draw(&mut self) -> Draw {
        while !self.is_last() {
            match self.phases[self.phase].length {
                Some(PhaseLength::Examples(k)) if self.phase_examples >= k => self.advance_phase(),
                _ => break,
            }
        }
        let cum = &self.cumulative[self.phase];
        let mut rng = item_rng(self.mix_seed, self.draws);
        let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        // First source whose cumulative weight exceeds u; zero-weight sources are never chosen.
        let source = cum
            .iter()
            .enumerate()
            .position(|(i, &c)| u < c && (i == 0 || c > cum[i - 1]))
            .expect("cumulative weights end at exactly 1");
        let index = match &mut self.orders[source] {
            Order::Epochs(s) => s.next_index() as u64,
            Order::Stream(next) => {
                *next += 1;
                *next - 1
            }
        };
        self.draws += 1;
        self.phase_examples += 1;
        Draw { source, index }
    }

    /// The draws of the next batch of `n` (counts as one batch / step).
    pub fn next_draws(&mut self, n: usize) -> Vec<Draw> {
        while !self.is_last() {
            match self.phases[self.phase].length {
                Some(PhaseLength::Batches(k)) if self.phase_batches >= k => self.advance_phase(),
                _ => break,
            }
        }
        let draws = (0..n).map(|_| self.next_draw()).collect();
        self.batches += 1;
        self.phase_batches += 1;
        draws
    }

    /// The next batch of `n` examples (counts as one batch / step).
    pub fn next_batch(&mut self, n: usize) -> Result<Vec<Example>> {
        self.next_draws(n)
            .into_iter()
            .map(|d| self.sources[d.source].source.get(d.index))
            .collect()
    }

    /// The position, to save with a checkpoint.
    pub fn state(&self) -> ScheduleState {
        let sources = self
            .sources
            .iter()
            .zip(&self.orders)
            .map(|(s, o)| {
                let c = match o {
                    Order::Epochs(e) => e.cursor(),
                    Order::Stream(next) => Cursor {
                        epoch: 0,
                        position: *next,
                    },
                };
                (s.name.clone(), c)
            })
            .collect();
        ScheduleState {
            seed: self.seed,
            draws: self.draws,
            batches: self.batches,
            phase: self.phase,
            phase_examples: self.phase_examples,
            phase_batches: self.phase_batches,
            sources,
        }
    }

    /// Continues from a saved position. The schedule must have been built the same way (same
    /// seed, sources and phases).
    pub fn restore(&mut self, state: &ScheduleState) -> Result<()> {
        let cfg = |m: String| Err(DataError::Config(format!("cannot restore schedule: {m}")));
        if state.seed != self.seed {
            return cfg(format!(
                "saved with seed {}, this schedule has seed {}",
                state.seed, self.seed
            ));
        }
        if state.phase >= self.phases.len() {
            return cfg(format!("phase {} of {}", state.phase, self.phases.len()));
        }
        let names: Vec<&String> = self.sources.iter().map(|s| &s.name).collect();
        if state.sources.len() != names.len()
            || names.iter().any(|n| !state.sources.contains_key(*n))
        {
            return cfg(format!(
                "saved sources {:?} differ from {:?}",
                state.sources.keys().collect::<Vec<_>>(),
                names
            ));
        }
        // Validate every cursor before changing anything.
        let mut orders = Vec::with_capacity(self.orders.len());
        for (s, o) in self.sources.iter().zip(&self.orders) {
            let c = state.sources[&s.name];
            orders.push(match o {
                Order::Epochs(e) => {
                    let mut e = e.clone();
                    e.set_cursor(c)
                        .or_else(|e| cfg(format!("source `{}`: {e}", s.name)))?;
                    Order::Epochs(e)
                }
                Order::Stream(_) => Order::Stream(c.position),
            });
        }
        self.orders = orders;
        self.draws = state.draws;
        self.batches = state.batches;
        self.phase = state.phase;
        self.phase_examples = state.phase_examples;
        self.phase_batches = state.phase_batches;
        Ok(())
    }
}

/// Mixes several sources by fixed weights, forever: a one-phase [`Schedule`].
#[derive(Debug)]
pub struct DomainMixer {
    inner: Schedule,
}

impl DomainMixer {
    /// A mixer over `(source, weight)` pairs.
    pub fn new(sources: Vec<(MixSource, f64)>, seed: u64) -> Result<Self> {
        let weights = sources.iter().map(|(s, w)| (s.name.clone(), *w)).collect();
        let sources = sources.into_iter().map(|(s, _)| s).collect();
        Ok(Self {
            inner: Schedule::new(
                sources,
                vec![Phase {
                    weights,
                    length: None,
                }],
                seed,
            )?,
        })
    }

    /// The sources, in construction order.
    pub fn sources(&self) -> &[MixSource] {
        self.inner.sources()
    }

    /// The normalised weights, in source order.
    pub fn proportions(&self) -> Vec<f64> {
        let cum = &self.inner.cumulative[0];
        cum.iter()
            .enumerate()
            .map(|(i, c)| if i == 0 { *c } else { c - cum[i - 1] })
            .collect()
    }

    /// The next draw.
    pub fn next_draw(&mut self) -> Draw {
        self.inner.next_draw()
    }

    /// The draws of the next batch of `n`.
    pub fn next_draws(&mut self, n: usize) -> Vec<Draw> {
        self.inner.next_draws(n)
    }

    /// The next batch of `n` examples.
    pub fn next_batch(&mut self, n: usize) -> Result<Vec<Example>> {
        self.inner.next_batch(n)
    }

    /// The position, to save with a checkpoint.
    pub fn state(&self) -> ScheduleState {
        self.inner.state()
    }

    /// Continues from a saved position.
    pub fn restore(&mut self, state: &ScheduleState) -> Result<()> {
        self.inner.restore(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::{Prompt, Reference};
    use crate::synth::{ArithmeticConfig, CountdownConfig};

    fn data(domain: &str, n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                id: format!("{domain}/{i}"),
                domain: domain.into(),
                prompt: Prompt::Text(format!("q{i}")),
                reference: Reference::Answer(i.to_string()),
                meta: Default::default(),
            })
            .collect()
    }

    #[test]
    fn epochs_are_permutations_and_differ() {
        let mut s = EpochSampler::new(10, 5).unwrap();
        let e0 = s.next_indices(10);
        let e1 = s.next_indices(10);
        for e in [&e0, &e1] {
            let mut x = e.clone();
            x.sort();
            assert_eq!(x, (0..10).collect::<Vec<_>>());
        }
        assert_ne!(e0, e1);
        assert_ne!(e0, (0..10).collect::<Vec<_>>());
        assert_eq!(
            s.cursor(),
            Cursor {
                epoch: 2,
                position: 0
            }
        );
        assert_eq!(e0, s.permutation(0));
        let mut q = EpochSampler::sequential(3).unwrap();
        assert_eq!(q.next_indices(7), vec![0, 1, 2, 0, 1, 2, 0]);
        assert!(EpochSampler::new(0, 1).is_err());
    }

    #[test]
    fn epoch_resume_is_exact() {
        for (n, m) in [(0, 25), (7, 30), (10, 3), (23, 41)] {
            let mut full = EpochSampler::new(10, 99).unwrap();
            let all = full.next_indices(n + m);
            let mut a = EpochSampler::new(10, 99).unwrap();
            let first = a.next_indices(n);
            let saved = serde_json::to_string(&a.cursor()).unwrap();
            let mut b = EpochSampler::new(10, 99).unwrap();
            b.set_cursor(serde_json::from_str(&saved).unwrap()).unwrap();
            let second = b.next_indices(m);
            assert_eq!([first, second].concat(), all, "n={n} m={m}");
        }
        let mut s = EpochSampler::new(4, 0).unwrap();
        assert!(
            s.set_cursor(Cursor {
                epoch: 0,
                position: 5
            })
            .is_err()
        );
        s.set_cursor(Cursor {
            epoch: 3,
            position: 4,
        })
        .unwrap();
        assert_eq!(
            s.cursor(),
            Cursor {
                epoch: 4,
                position: 0
            }
        );
    }

    #[test]
    fn epoch_batches_of_items() {
        let d = data("x", 5);
        let mut s = EpochSampler::new(5, 1).unwrap();
        let batch = s.next_batch(&d, 8).unwrap();
        assert_eq!(batch.len(), 8);
        assert!(s.next_batch(&d[..4], 1).is_err());
    }

    fn three() -> Vec<(MixSource, f64)> {
        vec![
            (MixSource::new("a", data("a", 50)), 0.6),
            (MixSource::new("b", data("b", 7)), 0.3),
            (MixSource::new("c", data("c", 1000)), 0.1),
        ]
    }

    #[test]
    fn mixer_proportions_within_tolerance() {
        let mut m = DomainMixer::new(three(), 2024).unwrap();
        let p = m.proportions();
        assert!((p[0] - 0.6).abs() < 1e-12 && (p[2] - 0.1).abs() < 1e-12);
        let n = 30_000;
        let mut counts = [0usize; 3];
        for ex in m.next_batch(n).unwrap() {
            counts[(ex.domain.as_bytes()[0] - b'a') as usize] += 1;
        }
        for (c, w) in counts.iter().zip([0.6, 0.3, 0.1]) {
            let sd = (n as f64 * w * (1.0 - w)).sqrt();
            assert!((*c as f64 - n as f64 * w).abs() < 4.0 * sd, "{counts:?}");
        }
    }

    #[test]
    fn mixer_is_deterministic_and_resumes_exactly() {
        let all: Vec<String> = DomainMixer::new(three(), 8)
            .unwrap()
            .next_batch(300)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        let mut a = DomainMixer::new(three(), 8).unwrap();
        let mut got: Vec<String> = Vec::new();
        for _ in 0..13 {
            got.extend(a.next_batch(10).unwrap().into_iter().map(|e| e.id));
        }
        let saved = serde_json::to_string(&a.state()).unwrap();
        let mut b = DomainMixer::new(three(), 8).unwrap();
        b.restore(&serde_json::from_str(&saved).unwrap()).unwrap();
        got.extend(b.next_batch(170).unwrap().into_iter().map(|e| e.id));
        assert_eq!(got, all);
        // Each finite source walks full epochs: `b` (7 items) never repeats within an epoch.
        let other: Vec<String> = DomainMixer::new(three(), 9)
            .unwrap()
            .next_batch(300)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_ne!(other, all);
    }

    #[test]
    fn mixer_restore_rejects_mismatch() {
        let mut a = DomainMixer::new(three(), 1).unwrap();
        a.next_batch(5).unwrap();
        let st = a.state();
        let mut wrong_seed = DomainMixer::new(three(), 2).unwrap();
        assert!(wrong_seed.restore(&st).is_err());
        let mut fewer = DomainMixer::new(three().into_iter().take(2).collect(), 1).unwrap();
        assert!(fewer.restore(&st).is_err());
        let mut bad = st.clone();
        bad.sources.insert(
            "b".into(),
            Cursor {
                epoch: 0,
                position: 99,
            },
        );
        let mut m = DomainMixer::new(three(), 1).unwrap();
        assert!(m.restore(&bad).is_err());
        assert_eq!(m.state().draws, 0, "a failed restore changes nothing");
    }

    #[test]
    fn zero_weights_and_bad_configs() {
        let mut m = DomainMixer::new(
            vec![
                (MixSource::new("a", data("a", 3)), 1.0),
                (MixSource::new("b", data("b", 3)), 0.0),
            ],
            0,
        )
        .unwrap();
        assert!(m.next_batch(500).unwrap().iter().all(|e| e.domain == "a"));
        assert!(DomainMixer::new(vec![(MixSource::new("a", data("a", 3)), 0.0)], 0).is_err());
        assert!(DomainMixer::new(vec![(MixSource::new("a", data("a", 3)), f64::NAN)], 0).is_err());
        assert!(DomainMixer::new(vec![(MixSource::new("a", data("a", 0)), 1.0)], 0).is_err());
        assert!(
            DomainMixer::new(
                vec![
                    (MixSource::new("a", data("a", 2)), 1.0),
                    (MixSource::new("a", data("a", 2)), 1.0)
                ],
                0
            )
            .is_err()
        );
        assert!(
            Schedule::new(
                vec![MixSource::new("a", data("a", 2))],
                vec![Phase::only("zzz", None)],
                0
            )
            .is_err()
        );
    }

    #[test]
    fn sequential_schedule_by_examples_and_batches() {
        let src = || {
            vec![
                MixSource::new("a", data("a", 10)),
                MixSource::new("b", data("b", 10)),
            ]
        };
        // By examples: exactly 25 from a, then b; a batch straddles the boundary.
        let mut s = Schedule::sequential(
            src(),
            [("a", Some(PhaseLength::Examples(25))), ("b", None)],
            3,
        )
        .unwrap();
        let doms: Vec<String> = (0..5)
            .flat_map(|_| s.next_batch(8).unwrap())
            .map(|e| e.domain)
            .collect();
        assert!(doms[..25].iter().all(|d| d == "a") && doms[25..].iter().all(|d| d == "b"));
        assert_eq!(s.phase(), 1);
        // By batches: 3 batches of a, then 2 of b, then the last phase goes on.
        let mut s = Schedule::sequential(
            src(),
            [
                ("a", Some(PhaseLength::Batches(3))),
                ("b", Some(PhaseLength::Batches(2))),
            ],
            3,
        )
        .unwrap();
        let batches: Vec<Vec<String>> = (0..7)
            .map(|_| {
                s.next_batch(4)
                    .unwrap()
                    .into_iter()
                    .map(|e| e.domain)
                    .collect()
            })
            .collect();
        for (i, b) in batches.iter().enumerate() {
            let want = if i < 3 { "a" } else { "b" };
            assert!(b.iter().all(|d| d == want), "batch {i}: {b:?}");
        }
    }

    #[test]
    fn schedule_mixed_phase_and_resume() {
        let src = || {
            vec![
                MixSource::new(
                    "cd",
                    CountdownGenerator::new(CountdownConfig::default(), 1).unwrap(),
                ),
                MixSource::new(
                    "ar",
                    ArithmeticGenerator::new(ArithmeticConfig::default(), 1).unwrap(),
                ),
                MixSource::new("x", data("x", 13)).in_order(),
            ]
        };
        let phases = || {
            vec![
                Phase::only("ar", Some(PhaseLength::Batches(4))),
                Phase::mix([("cd", 1.0), ("ar", 1.0), ("x", 2.0)], None),
            ]
        };
        let full: Vec<String> = {
            let mut s = Schedule::new(src(), phases(), 77).unwrap();
            (0..20)
                .flat_map(|_| s.next_batch(6).unwrap())
                .map(|e| e.id)
                .collect()
        };
        assert!(
            full[..24]
                .iter()
                .all(|id| id.starts_with("arithmetic-synth/1/"))
        );
        // Unbounded sources are walked in index order.
        assert_eq!(full[0], "arithmetic-synth/1/0");
        assert_eq!(full[23], "arithmetic-synth/1/23");
        let tail = &full[24..];
        let xs = tail.iter().filter(|i| i.starts_with("x/")).count();
        assert!(
            xs > tail.len() / 3,
            "x has half the weight: {xs} of {}",
            tail.len()
        );
        // In-order source: x/0, x/1, ... in sequence.
        let xseq: Vec<&String> = tail
            .iter()
            .filter(|i| i.starts_with("x/"))
            .take(3)
            .collect();
        assert_eq!(xseq, ["x/0", "x/1", "x/2"]);

        for cut in [2, 4, 5, 11] {
            let mut a = Schedule::new(src(), phases(), 77).unwrap();
            let mut got: Vec<String> = (0..cut)
                .flat_map(|_| a.next_batch(6).unwrap())
                .map(|e| e.id)
                .collect();
            let saved = serde_json::to_value(a.state()).unwrap();
            let mut b = Schedule::new(src(), phases(), 77).unwrap();
            b.restore(&serde_json::from_value(saved).unwrap()).unwrap();
            got.extend(
                (cut..20)
                    .flat_map(|_| b.next_batch(6).unwrap())
                    .map(|e| e.id),
            );
            assert_eq!(got, full, "cut at batch {cut}");
        }
    }

    #[test]
    fn derive_seed_separates_labels() {
        assert_ne!(derive_seed(1, "a"), derive_seed(1, "b"));
        assert_ne!(derive_seed(1, "a"), derive_seed(2, "a"));
        assert_eq!(derive_seed(1, "a"), derive_seed(1, "a"));
    }
}
