//! ROSE tree rollouts on the tiny-llama fixture: branch points are the highest-score positions
//! (scores recomputed here from the recorded candidates by the definition), epsilon = 1 gives
//! independent root samples, determinism and batching invariance, the ablation metrics, a hand
//! check of the score, and input errors.

mod common;

use common::*;
use kiln_model::CausalLm;
use kiln_rollout::bench::bench_tree;
use kiln_rollout::{
    BranchMetric, Engine, ForkOrigin, ForkRequest, RolloutError, SamplingParams, TokenEmbeddings,
    TreeGroup, TreeLink, TreeParams, branch_scores, position_stats, tree_rollouts,
    tree_rollouts_by_rounds_from, tree_rollouts_from,
};

const MAX_NEW: usize = 12;

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![5, 9, 17, 33, 2, 100, 7],
        vec![40, 41, 42],
        vec![200],
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    ]
}

/// Temperature 1 with a few stop ids: responses of varied lengths.
fn params(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        max_new_tokens: MAX_NEW,
        seed,
        stop_token_ids: (0..6).collect(),
        ..Default::default()
    }
}

fn tree(n: usize, epsilon: f64, metric: BranchMetric) -> TreeParams {
    TreeParams { n, epsilon, metric }
}

/// The input embedding rows of `net`, L2-normalised, in f64 (independent of `TokenEmbeddings`).
fn unit_rows(net: &CausalLm) -> (Vec<f64>, usize) {
    let w = net.embed_tokens.weight.val();
    let [_, dim] = w.dims();
    let mut v: Vec<f64> = w
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(|x| x as f64)
        .collect();
    for row in v.chunks_exact_mut(dim) {
        let n = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        row.iter_mut().for_each(|x| *x /= n);
    }
    (v, dim)
}

/// `-F * H` of one position by the definition: the double sum over i != j.
fn score_by_definition(cands: &[(u32, f32)], rows: &[f64], dim: usize) -> f64 {
    let p: Vec<f64> = cands.iter().map(|c| (c.1 as f64).exp()).collect();
    let h: f64 = cands.iter().zip(&p).map(|(c, p)| -p * c.1 as f64).sum();
    let e = |id: u32| &rows[id as usize * dim..(id as usize + 1) * dim];
    let mut f = 0.0;
    for i in 0..cands.len() {
        for j in 0..cands.len() {
            if i != j {
                let cos: f64 = e(cands[i].0)
                    .iter()
                    .zip(e(cands[j].0))
                    .map(|(a, b)| a * b)
                    .sum();
                f += p[i] * p[j] * cos;
            }
        }
    }
    -f * h
}

/// Structure every tree must have, whatever the metric.
fn check_tree(g: &TreeGroup, n: usize, prompt: &[u32]) {
    assert_eq!(g.prompt_ids, prompt);
    assert_eq!(g.rollouts.len(), n);
    assert_eq!(g.links.len(), n);
    assert_eq!(g.scores.len(), n);
    assert_eq!(g.links[0], TreeLink::ROOT);
    for (b, (r, link)) in g.rollouts.iter().zip(&g.links).enumerate() {
        assert_eq!(r.sample_index, b);
        assert_eq!(r.prompt_index, g.prompt_index);
        assert!(!r.has_kv(), "retained KV must be dropped");
        assert!(!r.response_ids.is_empty() && r.response_ids.len() <= MAX_NEW);
        assert_eq!(g.scores[b].len(), r.response_ids.len());
        match link.parent {
            None => {
                assert_eq!(link.branch_pos, 0);
                assert_eq!(r.fork, None);
            }
            Some(p) => {
                let k = link.branch_pos;
                let parent = &g.rollouts[p];
                assert!(p < b, "parent {p} of response {b} is not earlier");
                assert!(
                    k < parent.response_ids.len(),
                    "branch point past the parent"
                );
                assert!(
                    r.response_ids.len() > k,
                    "a branch samples at least one token"
                );
                assert_eq!(r.response_ids[..k], parent.response_ids[..k]);
                assert_eq!(r.logprobs[..k], parent.logprobs[..k]);
                assert_eq!(
                    r.fork,
                    Some(ForkOrigin {
                        parent_sample: p,
                        at: k
                    })
                );
            }
        }
    }
}

/// (response, position) of the first maximum of `scores[..upto]` in (response, position) order.
fn first_argmax(scores: &[Vec<f32>]) -> (usize, usize) {
    let mut best = (0, 0, f32::NEG_INFINITY);
    for (b, s) in scores.iter().enumerate() {
        for (t, &v) in s.iter().enumerate() {
            if v > best.2 {
                best = (b, t, v);
            }
        }
    }
    (best.0, best.1)
}

#[test]
fn epsilon_zero_branches_at_the_highest_score() {
    let (cfg, net, rope) = tiny_model("tiny-llama");
    let engine = Engine::new(&net, &rope, cfg.max_position_embeddings);
    let emb = TokenEmbeddings::from_net(&net).unwrap();
    let (rows, dim) = unit_rows(&net);
    let n = 6;
    // top_logprobs 0: the tree records the spec's top-20 itself.
    let groups = tree_rollouts(
        &engine,
        &prompts(),
        &params(11),
        &tree(n, 0.0, BranchMetric::SemanticEntropy),
        &emb,
    )
    .unwrap();
    assert_eq!(groups.len(), prompts().len());
    for (g, prompt) in groups.iter().zip(prompts()) {
        check_tree(g, n, &prompt);
        for (b, r) in g.rollouts.iter().enumerate() {
            let top = r.top_logprobs.as_ref().expect("candidates recorded");
            assert!(top.iter().all(|c| c.len() == 20));
            // The stored scores are branch_scores of the rollout (copied ones included).
            assert_eq!(
                g.scores[b],
                branch_scores(r, &emb, BranchMetric::SemanticEntropy)
            );
            // branch_scores is -F * H by the definition, within f32 rounding.
            for (t, c) in top.iter().enumerate() {
                let want = score_by_definition(c, &rows, dim);
                assert!(
                    (g.scores[b][t] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "response {b} position {t}: {} vs {want}",
                    g.scores[b][t]
                );
            }
        }
        for b in 1..n {
            let link = g.links[b];
            let parent = link
                .parent
                .expect("epsilon = 0: every later response branches");
            let k = link.branch_pos;
            // The branch point is the first maximum of the earlier responses' scores...
            assert_eq!(first_argmax(&g.scores[..b]), (parent, k), "response {b}");
            // ...and, recomputed by the definition, no earlier position scores higher.
            let chosen = score_by_definition(
                &g.rollouts[parent].top_logprobs.as_ref().unwrap()[k],
                &rows,
                dim,
            );
            for (a, r) in g.rollouts[..b].iter().enumerate() {
                for (t, c) in r.top_logprobs.as_ref().unwrap().iter().enumerate() {
                    let s = score_by_definition(c, &rows, dim);
                    assert!(
                        s <= chosen + 1e-6,
                        "({a}, {t}) scores {s} > chosen {chosen}"
                    );
                }
            }
        }
    }
}

#[test]
fn epsilon_one_samples_every_response_from_the_root() {
    let (cfg, net, rope) = tiny_model("tiny-llama");
    let engine = Engine::new(&net, &rope, cfg.max_position_embeddings);
    let emb = TokenEmbeddings::from_net(&net).unwrap();
    let n = 5;
    let p = params(3);
    let groups = tree_rollouts(
        &engine,
        &prompts(),
        &p,
        &tree(n, 1.0, BranchMetric::SemanticEntropy),
        &emb,
    )
    .unwrap();
    for (pi, (g, prompt)) in groups.iter().zip(prompts()).enumerate() {
        check_tree(g, n, &prompt);
        assert!(g.links.iter().all(|l| *l == TreeLink::ROOT));
        // Response r is the engine's sample (prompt p, sample r) under the same seed.
        let want = engine
            .generate_indexed(
                &[pi],
                0,
                std::slice::from_ref(&prompt),
                &SamplingParams {
                    n,
                    top_logprobs: 20,
                    ..p.clone()
                },
                &mut |_| {},
            )
            .unwrap();
        for (r, w) in g.rollouts.iter().zip(&want[0].rollouts) {
            assert_eq!(r.response_ids, w.response_ids);
        }
        assert_ne!(g.rollouts[0].response_ids, g.rollouts[1].response_ids);
    }
}

#[test]
fn trees_are_deterministic_and_do_not_depend_on_the_batch() {
    let (cfg, net, rope) = tiny_model("tiny-llama");
    let engine = Engine::new(&net, &rope, cfg.max_position_embeddings);
    let emb = TokenEmbeddings::from_net(&net).unwrap();
    let t = tree(6, 0.5, BranchMetric::SemanticEntropy);
    let run = |e: &Engine<'_>, first: usize, ps: &[Vec<u32>], seed: u64| {
        tree_rollouts_from(e, first, ps, &params(seed), &t, &emb).unwrap()
    };
    let same = |a: &TreeGroup, b: &TreeGroup| {
        assert_eq!(a.prompt_index, b.prompt_index);
        assert_eq!(a.links, b.links);
        for (x, y) in a.rollouts.iter().zip(&b.rollouts) {
            assert_eq!(x.response_ids, y.response_ids);
        }
    };
    let all = run(&engine, 0, &prompts(), 7);
    // Both kinds of rounds happen with epsilon = 0.5.
    let links = all.iter().flat_map(|g| &g.links[1..]);
    assert!(links.clone().any(|l| l.parent.is_some()));
    assert!(links.clone().any(|l| l.parent.is_none()));
    // Same seed, same trees.
    for (a, b) in all.iter().zip(&run(&engine, 0, &prompts(), 7)) {
        same(a, b);
    }
    // One prompt alone (numbered as in the full list), a prefix of the list, and one-row
    // batches: the same trees.
    let ps = prompts();
    same(&all[2], &run(&engine, 2, &ps[2..3], 7)[0]);
    for (a, b) in all.iter().zip(&run(&engine, 0, &ps[..2], 7)) {
        same(a, b);
    }
    let narrow = Engine::new(&net, &rope, cfg.max_position_embeddings).with_max_batch_tokens(1);
    for (a, b) in all.iter().zip(&run(&narrow, 0, &ps, 7)) {
        same(a, b);
    }
    // Another seed, other trees.
    let other = run(&engine, 0, &prompts(), 8);
    assert!(all.iter().zip(&other).any(
        |(a, b)| a.links != b.links || a.rollouts[0].response_ids != b.rollouts[0].response_ids
    ));
}

#[test]
fn entropy_and_random_metrics_make_valid_trees() {
    let (cfg, net, rope) = tiny_model("tiny-llama");
    let engine = Engine::new(&net, &rope, cfg.max_position_embeddings);
    let emb = TokenEmbeddings::from_net(&net).unwrap();
    let n = 6;

    // Entropy, epsilon 0: the branch point is the first maximum of the recorded entropies.
    let groups = tree_rollouts(
        &engine,
        &prompts(),
        &params(5),
        &tree(n, 0.0, BranchMetric::Entropy),
        &emb,
    )
    .unwrap();
    for (g, prompt) in groups.iter().zip(prompts()) {
        check_tree(g, n, &prompt);
        // No candidates needed, none recorded.
        assert!(g.rollouts.iter().all(|r| r.top_logprobs.is_none()));
        let ent: Vec<Vec<f32>> = g.rollouts.iter().map(|r| r.entropies.clone()).collect();
        assert_eq!(g.scores, ent);
        for b in 1..n {
            let l = g.links[b];
            assert_eq!(first_argmax(&ent[..b]), (l.parent.unwrap(), l.branch_pos));
        }
    }

    // Random, epsilon 0: valid trees, reproducible from the seed, different across seeds.
    let random = |seed| {
        tree_rollouts(
            &engine,
            &prompts(),
            &params(seed),
            &tree(n, 0.0, BranchMetric::Random),
            &emb,
        )
        .unwrap()
    };
    let a = random(21);
    for (g, prompt) in a.iter().zip(prompts()) {
        check_tree(g, n, &prompt);
        assert!(g.links[1..].iter().all(|l| l.parent.is_some()));
        assert!(g.scores.iter().flatten().all(|&s| s == 0.0));
    }
    let b = random(21);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.links, y.links);
    }
    let c = random(22);
    assert!(a.iter().zip(&c).any(|(x, y)| x.links != y.links));
    // Random positions are not just the first: some branch past position 0 or off response 0.
    assert!(
        a.iter()
            .flat_map(|g| &g.links[1..])
            .any(|l| l.branch_pos > 0 && l.parent != Some(0))
    );
}

#[test]
fn the_score_by_hand() {
    // Rows: e0 = (1, 0), e1 = (0, 1), e2 = (2, 0) -> (1, 0) once normalised, e3 = (0.5, sqrt 3/2)
    // (60 degrees from e0), e4 = 0 (stays zero).
    let s3 = 3f32.sqrt() / 2.0;
    let emb = TokenEmbeddings::from_rows(2, vec![1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.5, s3, 0.0, 0.0])
        .unwrap();
    assert_eq!((emb.vocab(), emb.dim()), (5, 2));
    assert_eq!(emb.row(2), &[1.0, 0.0]);
    assert_eq!(emb.row(4), &[0.0, 0.0]);
    let half = 0.5f32.ln();
    let ln2 = std::f64::consts::LN_2;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;

    // Two candidates at 0.5 with orthogonal embeddings: H = ln 2, F = 0, score 0.
    let s = position_stats(&[(0, half), (1, half)], &emb);
    assert!(close(s.entropy, ln2) && close(s.similarity, 0.0) && close(s.score(), 0.0));
    // Identical embeddings: F = 2 * 0.25 * 1 = 0.5, score = -0.5 ln 2.
    let s = position_stats(&[(0, half), (2, half)], &emb);
    assert!(close(s.similarity, 0.5), "{s:?}");
    assert!(close(s.score(), -0.5 * ln2));
    // Probabilities that do not sum to 1 (a truncated top-k) are not renormalised:
    // p = 0.5, 0.3 at 60 degrees: F = 2 * 0.5 * 0.3 * 0.5, H = -(0.5 ln 0.5 + 0.3 ln 0.3).
    let s = position_stats(&[(0, half), (3, 0.3f32.ln())], &emb);
    let h = -(0.5 * 0.5f64.ln() + 0.3 * 0.3f64.ln());
    assert!(close(s.entropy, h) && close(s.similarity, 0.15), "{s:?}");
    assert!(close(s.score(), -0.15 * h));
    // A zero row contributes nothing (not even to the diagonal that is subtracted).
    let s = position_stats(&[(0, half), (4, half)], &emb);
    assert!(close(s.similarity, 0.0), "{s:?}");
    // One candidate: no pairs, F = 0.
    assert!(close(position_stats(&[(1, 0.0)], &emb).similarity, 0.0));
}

#[test]
fn tree_params_serde() {
    let kebab = serde_json::to_string(&BranchMetric::SemanticEntropy).unwrap();
    assert_eq!(kebab, "\"semantic-entropy\"");
    let t: TreeParams = serde_json::from_str(r#"{"epsilon": 0.25, "metric": "random"}"#).unwrap();
    assert_eq!(t, tree(8, 0.25, BranchMetric::Random));
    let d: TreeParams = serde_json::from_str("{}").unwrap();
    assert_eq!(d, tree(8, 0.5, BranchMetric::SemanticEntropy));
    assert!(serde_json::from_str::<TreeParams>(r#"{"eps": 1}"#).is_err());
}

#[test]
fn bad_input_is_a_clear_error() {
    let (cfg, net, rope) = tiny_model("tiny-llama");
    let engine = Engine::new(&net, &rope, cfg.max_position_embeddings);
    let emb = TokenEmbeddings::from_net(&net).unwrap();
    let ps = prompts();
    let msg = |e: RolloutError| e.to_string();
    let ok = tree(4, 0.5, BranchMetric::SemanticEntropy);
    let e =
        msg(tree_rollouts(&engine, &ps, &params(1), &tree(0, 0.5, ok.metric), &emb).unwrap_err());
    assert!(
        e.contains("invalid tree parameter") && e.contains("n (responses per prompt)"),
        "{e}"
    );
    for eps in [-0.1, 1.5, f64::NAN] {
        let e = msg(
            tree_rollouts(&engine, &ps, &params(1), &tree(4, eps, ok.metric), &emb).unwrap_err(),
        );
        assert!(e.contains("epsilon must be in [0, 1]"), "{e}");
    }
    let small = TokenEmbeddings::from_rows(2, vec![1.0; 20]).unwrap();
    let e = msg(tree_rollouts(&engine, &ps, &params(1), &ok, &small).unwrap_err());
    assert!(
        e.contains("10 rows") && e.contains("vocabulary of 256"),
        "{e}"
    );
    let e = msg(TokenEmbeddings::from_rows(3, vec![1.0; 4]).unwrap_err());
    assert!(e.contains("width 3"), "{e}");
    let bad = SamplingParams {
        top_logprobs: 21,
        ..params(1)
    };
    let e = msg(tree_rollouts(&engine, &ps, &bad, &ok, &emb).unwrap_err());
    assert!(e.contains("top_logprobs must be at most 20"), "{e}");
    let bad = SamplingParams {
        max_new_tokens: 0,
        ..params(1)
    };
    let e = msg(tree_rollouts(&engine, &ps, &bad, &ok, &emb).unwrap_err());
    assert!(e.contains("max_new_tokens"), "{e}");
    let e = msg(tree_rollouts(&engine, &[vec![1, 2], vec![]], &params(1), &ok, &emb).unwrap_err());
    assert!(e.contains("prompt 1") && e.contains("no tokens"), "{e}");
    // No prompts: no trees.
    assert!(
        tree_rollouts(&engine, &[], &params(1), &ok, &emb)
            .unwrap()
            .is_empty()
    );
}

/// The decision stream of (seed, prompt, round) as the module documents it: a ChaCha8 stream
/// keyed by the three numbers and the tag "kilntree"; its first draw below epsilon = a root.
fn is_root(seed: u64, prompt: usize, round: usize, epsilon: f64) -> bool {
    use rand::{Rng, SeedableRng};
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(prompt as u64).to_le_bytes());
    key[16..24].copy_from_slice(&(round as u64).to_le_bytes());
    key[24..].copy_from_slice(b"kilntree");
    round == 0 || rand_chacha::ChaCha8Rng::from_seed(key).random::<f64>() < epsilon
}

/// The scheduled trees (every round in one running batch) are the trees grown round by round
/// (one batched call per round) and the trees grown one response at a time with the public
/// engine calls (`generate_indexed` for a root, `fork` of the parent for a branch): same links,
/// same tokens, for the three metrics and several epsilons. Branches copy their parent's first
/// k tokens, log-probs, entropies and candidates exactly.
#[test]
fn scheduled_trees_equal_round_by_round_and_one_at_a_time() {
    let (cfg, net, rope) = tiny_model("tiny-llama");
    let engine = Engine::new(&net, &rope, cfg.max_position_embeddings);
    let emb = TokenEmbeddings::from_net(&net).unwrap();
    let ps = prompts();
    let n = 7;
    for (seed, epsilon, metric) in [
        (31, 0.0, BranchMetric::SemanticEntropy),
        (32, 0.5, BranchMetric::SemanticEntropy),
        (33, 0.3, BranchMetric::Entropy),
        (34, 0.5, BranchMetric::Random),
        (35, 1.0, BranchMetric::SemanticEntropy),
    ] {
        let t = tree(n, epsilon, metric);
        let p = params(seed);
        let scheduled = tree_rollouts_from(&engine, 3, &ps, &p, &t, &emb).unwrap();
        let rounds = tree_rollouts_by_rounds_from(&engine, 3, &ps, &p, &t, &emb).unwrap();
        let top = if metric == BranchMetric::SemanticEntropy {
            20
        } else {
            0
        };
        let one = SamplingParams {
            top_logprobs: top,
            retain_kv: true,
            ..p.clone()
        };
        for ((g, h), prompt) in scheduled.iter().zip(&rounds).zip(&ps) {
            let what = format!(
                "seed {seed} epsilon {epsilon} {metric:?} prompt {}",
                g.prompt_index
            );
            check_tree(g, n, prompt);
            assert_eq!(g.prompt_index, h.prompt_index);
            assert_eq!(g.links, h.links, "{what}");
            assert_eq!(g.scores, h.scores, "{what}");
            // One response at a time, by hand.
            let mut mine: Vec<kiln_rollout::Rollout> = Vec::new();
            for (r, (x, y)) in g.rollouts.iter().zip(&h.rollouts).enumerate() {
                assert_eq!(x.response_ids, y.response_ids, "{what} response {r}");
                assert_eq!(x.logprobs, y.logprobs, "{what} response {r}");
                let link = g.links[r];
                assert_eq!(
                    link.parent.is_none(),
                    is_root(seed, g.prompt_index, r, epsilon),
                    "{what} response {r}: root or branch"
                );
                let want = match link.parent {
                    None => engine
                        .generate_indexed(
                            &[g.prompt_index],
                            r,
                            std::slice::from_ref(prompt),
                            &one,
                            &mut |_| {},
                        )
                        .unwrap()
                        .remove(0)
                        .rollouts
                        .remove(0),
                    Some(parent) => {
                        let k = link.branch_pos;
                        if metric != BranchMetric::Random {
                            assert_eq!(first_argmax(&g.scores[..r]), (parent, k), "{what} {r}");
                        }
                        let pr = &g.rollouts[parent];
                        assert_eq!(x.response_ids[..k], pr.response_ids[..k]);
                        assert_eq!(x.logprobs[..k], pr.logprobs[..k]);
                        assert_eq!(x.entropies[..k], pr.entropies[..k]);
                        if let (Some(a), Some(b)) = (&x.top_logprobs, &pr.top_logprobs) {
                            assert_eq!(a[..k], b[..k]);
                        }
                        engine
                            .fork(
                                &[ForkRequest {
                                    parent: &mine[parent],
                                    at: k,
                                    n: 1,
                                    first_sample_index: r,
                                }],
                                &SamplingParams {
                                    max_new_tokens: MAX_NEW - k,
                                    ..one.clone()
                                },
                            )
                            .unwrap()
                            .remove(0)
                    }
                };
                assert_eq!(x.response_ids, want.response_ids, "{what} response {r}");
                for (a, b) in x.logprobs.iter().zip(&want.logprobs) {
                    assert!((a - b).abs() < 1e-5, "{what} response {r}: {a} vs {b}");
                }
                mine.push(want);
            }
        }
    }
}

/// A small batch budget grows a few groups at a time (later prompts start as groups finish)
/// and admits rows as room frees up: the same trees.
#[test]
fn a_small_batch_budget_gives_the_same_trees() {
    let (cfg, net, rope) = tiny_model("tiny-llama");
    let emb = TokenEmbeddings::from_net(&net).unwrap();
    let wide = Engine::new(&net, &rope, cfg.max_position_embeddings);
    // 11 + 12 slots per row: two groups open at a time, two rows per batch.
    let small = Engine::new(&net, &rope, cfg.max_position_embeddings).with_max_batch_tokens(50);
    let t = tree(6, 0.5, BranchMetric::SemanticEntropy);
    let a = tree_rollouts(&wide, &prompts(), &params(41), &t, &emb).unwrap();
    small.reset_stats();
    let b = tree_rollouts(&small, &prompts(), &params(41), &t, &emb).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.links, y.links);
        for (u, v) in x.rollouts.iter().zip(&y.rollouts) {
            assert_eq!(u.response_ids, v.response_ids);
        }
    }
    // Prompts were prefilled in several calls as groups opened.
    assert!(small.stats().prefill_calls > 1);
}

/// Tree (n = 8, epsilon 0.5) against 8 independent samples of the same length budget on the
/// tiny model (eos ignored, so every root response has `max_new_tokens` tokens). Prints the
/// report; run with `cargo test --release -p kiln-rollout --test tree -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_tree_against_independent_samples() {
    let (cfg, net, rope) = tiny_model("tiny-llama");
    let engine = Engine::new(&net, &rope, cfg.max_position_embeddings);
    let emb = TokenEmbeddings::from_net(&net).unwrap();
    let ps = kiln_rollout::bench::bench_prompts(8, 32, 256);
    let p = SamplingParams {
        temperature: 1.0,
        max_new_tokens: 128,
        ignore_eos: true,
        seed: 1,
        ..Default::default()
    };
    let report = bench_tree(&engine, &emb, &ps, &p, &TreeParams::default(), true).unwrap();
    println!("{}", report.summary());
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

/// As above on SmolLM2-135M (4 prompts, n = 8, 64 new tokens, temperature 1: a CPU-sized run).
#[test]
#[ignore]
fn bench_tree_against_independent_samples_smollm2() {
    let model = kiln_model::Model::load("smollm2", &burn::prelude::Device::flex()).unwrap();
    let engine = Engine::from_model(&model);
    let emb = TokenEmbeddings::from_net(&model.net).unwrap();
    let ps = kiln_rollout::bench::bench_prompts(4, 32, model.net.vocab_size());
    let p = SamplingParams {
        temperature: 1.0,
        max_new_tokens: 64,
        ignore_eos: true,
        seed: 1,
        ..Default::default()
    };
    let by_rounds = std::env::var_os("KILN_BENCH_BY_ROUNDS").is_some();
    let report = bench_tree(&engine, &emb, &ps, &p, &TreeParams::default(), by_rounds).unwrap();
    println!("{}", report.summary());
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

/// Why the batch matters for the tree: wall time of one decode step of SmolLM2 against the rows
/// in the batch (one prompt of 32 tokens, rows = samples, 16 new tokens, prefill excluded).
/// Run with `cargo test --release -p kiln-rollout --test tree -- --ignored --nocapture decode_cost`.
#[test]
#[ignore]
fn decode_cost_by_batch_smollm2() {
    use kiln_rollout::bench::{BenchConfig, bench_rollout};
    let model = kiln_model::Model::load("smollm2", &burn::prelude::Device::flex()).unwrap();
    let engine = Engine::from_model(&model);
    for rows in [1, 2, 4, 8, 16, 32] {
        let config = BenchConfig {
            batch: 1,
            n: rows,
            prompt_len: 32,
            new_tokens: 16,
            temperature: 1.0,
            seed: 1,
        };
        let r = bench_rollout(&engine, model.net.vocab_size(), &config).unwrap();
        let per_step = (r.total_s - r.prefill_s) / r.decode_steps as f64;
        println!(
            "rows {rows:>2}: {:.1} ms per decode step, {:.2} ms per row-step",
            per_step * 1e3,
            per_step * 1e3 / rows as f64
        );
    }
}
