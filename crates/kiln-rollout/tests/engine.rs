//! The rollout engine on the tiny fixture models: greedy parity with transformers, behaviour
//! log-probs against the training path, the sampling distribution (chi-square), batching
//! invariance, forking, and input errors.

mod common;

use common::*;
use kiln_rollout::{Engine, FinishReason, ForkRequest, RolloutError, SamplingParams};

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![5, 9, 17, 33, 2, 100, 7],
        vec![40, 41, 42],
        vec![200],
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    ]
}

#[test]
fn greedy_matches_transformers_alone_and_batched() {
    for name in TINY_MODELS {
        let (cfg, net, rope) = tiny_model(name);
        let engine = Engine::new(&net, &rope, cfg.max_position_embeddings);
        let prompt = expected_ids(name, "greedy.prompt");
        let output = expected_ids(name, "greedy.output");
        let want = &output[prompt.len()..];
        let params = SamplingParams {
            n: 2,
            ..SamplingParams::greedy(want.len())
        };
        // Alone, and in a batch with prompts of other lengths (left padding, shared prefill).
        let mut batch = prompts();
        batch.insert(1, prompt.clone());
        for list in [vec![prompt.clone()], batch] {
            let groups = engine.generate(&list, &params).unwrap();
            for g in groups.iter().filter(|g| g.prompt_ids == prompt) {
                for r in &g.rollouts {
                    assert_eq!(r.response_ids, want, "{name}");
                    assert_eq!(r.finish_reason, FinishReason::Length);
                }
            }
        }
    }
}

#[test]
fn behaviour_logprobs_match_the_training_path() {
    for name in TINY_MODELS {
        let (cfg, net, rope) = tiny_model(name);
        let engine =
            Engine::new(&net, &rope, cfg.max_position_embeddings).with_max_batch_tokens(64);
        let params = SamplingParams {
            n: 3,
            temperature: 1.0,
            max_new_tokens: 12,
            seed: 7,
            ..Default::default()
        };
        let groups = engine.generate(&prompts(), &params).unwrap();
        let mut worst = 0f64;
        let mut worst_h = 0f64;
        for r in groups.iter().flat_map(|g| &g.rollouts) {
            assert_eq!(r.response_ids.len(), 12);
            let seq: Vec<u32> = r
                .prompt_ids
                .iter()
                .chain(&r.response_ids)
                .copied()
                .collect();
            let (lp, v) = full_logprobs(&net, &rope, &seq);
            for (t, (&tok, (&got, &h))) in r
                .response_ids
                .iter()
                .zip(r.logprobs.iter().zip(&r.entropies))
                .enumerate()
            {
                let pos = r.prompt_ids.len() - 1 + t;
                let row = &lp[pos * v..(pos + 1) * v];
                worst = worst.max((got as f64 - row[tok as usize]).abs());
                let ent: f64 = -row.iter().map(|&l| l.exp() * l).sum::<f64>();
                worst_h = worst_h.max((h as f64 - ent).abs());
            }
        }
        println!("{name}: max |behaviour - training| log-prob {worst:.2e}, entropy {worst_h:.2e}");
        assert!(worst < 1e-4, "{name}: {worst}");
        assert!(worst_h < 1e-4, "{name}: entropy {worst_h}");
    }
}

/// The exact filtered distribution, computed independently: full sort, f64.
fn reference_distribution(z: &[f64], p: &SamplingParams) -> Vec<f64> {
    let t = p.temperature as f64;
    let s: Vec<f64> = z.iter().map(|&x| x / t).collect();
    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut probs: Vec<f64> = s.iter().map(|&x| (x - max).exp()).collect();
    let norm = |v: &mut Vec<f64>| {
        let sum: f64 = v.iter().sum();
        v.iter_mut().for_each(|x| *x /= sum);
    };
    norm(&mut probs);
    let mut order: Vec<usize> = (0..z.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    if p.top_k > 0 {
        for &i in &order[p.top_k.min(order.len())..] {
            probs[i] = 0.0;
        }
        norm(&mut probs);
    }
    if p.top_p < 1.0 {
        let mut cum = 0.0;
        let mut crossed = false;
        for &i in &order {
            if crossed {
                probs[i] = 0.0;
            } else {
                cum += probs[i];
                crossed = cum >= p.top_p as f64;
            }
        }
        norm(&mut probs);
    }
    if p.min_p > 0.0 {
        let top = probs[order[0]];
        for x in probs.iter_mut() {
            if *x < p.min_p as f64 * top {
                *x = 0.0;
            }
        }
        norm(&mut probs);
    }
    probs
}

/// Upper 0.1% point of chi-square with `df` degrees of freedom (Wilson-Hilferty).
fn chi2_critical(df: f64) -> f64 {
    let z = 3.090_232;
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

#[test]
fn sampled_frequencies_match_the_filtered_softmax() {
    let (cfg, net, rope) = tiny_model("tiny-qwen2");
    let engine = Engine::new(&net, &rope, cfg.max_position_embeddings);
    let prompt = vec![5u32, 9, 17, 33, 2, 100, 7];
    // A sharper distribution than the random model's near-uniform one, so the filters bite.
    let z: Vec<f64> = last_logits(&net, &rope, &prompt);
    let draws = 20_000;
    let configs = [
        (0.5, 0, 1.0, 0.0),
        (1.0, 0, 1.0, 0.0),
        (0.3, 12, 1.0, 0.0),
        (0.5, 0, 0.7, 0.0),
        (0.6, 0, 1.0, 0.1),
        (0.5, 40, 0.9, 0.05),
    ];
    for (ci, &(t, k, p, m)) in configs.iter().enumerate() {
        let params = SamplingParams {
            n: draws,
            temperature: t,
            top_k: k,
            top_p: p,
            min_p: m,
            max_new_tokens: 1,
            seed: 1234 + ci as u64,
            ..Default::default()
        };
        let want = reference_distribution(&z, &params);
        let groups = engine
            .generate(std::slice::from_ref(&prompt), &params)
            .unwrap();
        let mut counts = vec![0usize; z.len()];
        for r in &groups[0].rollouts {
            let tok = r.response_ids[0] as usize;
            assert!(
                want[tok] > 0.0,
                "config {ci}: token {tok} is outside the filtered support"
            );
            // The reported behaviour log-prob is the filtered distribution's.
            assert!(
                (r.logprobs[0] as f64 - want[tok].ln()).abs() < 1e-4,
                "config {ci}: log-prob"
            );
            counts[tok] += 1;
        }
        // Bins with expected count >= 5; the rest pooled.
        let (mut chi2, mut df) = (0.0, 0usize);
        let (mut pool_e, mut pool_o) = (0.0, 0.0);
        for (i, &pw) in want.iter().enumerate() {
            let e = pw * draws as f64;
            if e >= 5.0 {
                chi2 += (counts[i] as f64 - e).powi(2) / e;
                df += 1;
            } else if pw > 0.0 {
                pool_e += e;
                pool_o += counts[i] as f64;
            }
        }
        if pool_e >= 5.0 {
            chi2 += (pool_o - pool_e).powi(2) / pool_e;
            df += 1;
        }
        let support = want.iter().filter(|&&x| x > 0.0).count();
        let dof = (df.max(2) - 1) as f64;
        println!(
            "config {ci} (T={t}, k={k}, p={p}, min_p={m}): support {support}, chi2 {chi2:.1} on {dof} dof (critical {:.1})",
            chi2_critical(dof)
        );
        assert!(
            chi2 < chi2_critical(dof),
            "config {ci}: chi2 {chi2} on {dof} dof"
        );
    }
}

#[test]
fn tokens_do_not_depend_on_batching() {
    let (cfg, net, rope) = tiny_model("tiny-llama");
    let params = SamplingParams {
        n: 4,
        temperature: 1.0,
        top_p: 0.9,
        max_new_tokens: 10,
        seed: 42,
        stop_token_ids: vec![3],
        ..Default::default()
    };
    let big = Engine::new(&net, &rope, cfg.max_position_embeddings);
    let tiny = Engine::new(&net, &rope, cfg.max_position_embeddings).with_max_batch_tokens(1);
    let a = big.generate(&prompts(), &params).unwrap();
    let b = tiny.generate(&prompts(), &params).unwrap();
    // Fewer samples: the first ones are the same rows.
    let c = big
        .generate(
            &prompts(),
            &SamplingParams {
                n: 2,
                ..params.clone()
            },
        )
        .unwrap();
    for ((ga, gb), gc) in a.iter().zip(&b).zip(&c) {
        for (i, ra) in ga.rollouts.iter().enumerate() {
            assert_eq!(ra.response_ids, gb.rollouts[i].response_ids);
            if i < 2 {
                assert_eq!(ra.response_ids, gc.rollouts[i].response_ids);
            }
        }
    }
    // Different samples of one prompt differ (random streams are distinct).
    assert_ne!(a[0].rollouts[0].response_ids, a[0].rollouts[1].response_ids);
    // The prompt was prefilled once per wave, not once per sample.
    big.reset_stats();
    big.generate(&prompts(), &params).unwrap();
    let total: usize = prompts().iter().map(Vec::len).sum();
    assert_eq!(big.stats().prefill_tokens, total);
}

#[test]
fn finished_rows_leave_the_batch() {
    let (cfg, net, rope) = tiny_model("tiny-llama");
    let engine = Engine::new(&net, &rope, cfg.max_position_embeddings);
    // Token 7 is frequent enough under a flat distribution to end most rows early.
    let params = SamplingParams {
        n: 16,
        temperature: 3.0,
        max_new_tokens: 200,
        seed: 3,
        stop_token_ids: (0..40).collect(),
        ..Default::default()
    };
    let groups = engine.generate(&[vec![1, 2, 3]], &params).unwrap();
    let lens: Vec<usize> = groups[0]
        .rollouts
        .iter()
        .map(|r| r.response_ids.len())
        .collect();
    let s = engine.stats();
    let total: usize = lens.iter().sum();
    println!("lengths {lens:?}, stats {s:?}");
    assert!(s.compactions > 0);
    // Row-steps stay close to the tokens actually produced.
    assert!(
        s.decode_rows < 2 * total,
        "{} row-steps for {total} tokens",
        s.decode_rows
    );
    for r in &groups[0].rollouts {
        if r.finish_reason == FinishReason::Eos {
            assert!(
                params
                    .stop_token_ids
                    .contains(r.response_ids.last().unwrap())
            );
        }
    }
}

#[test]
fn decode_grows_the_kv_cache_a_few_times_not_every_step() {
    // Growing copies the whole cache: a 200-token decode must grow it a few times, not on every
    // step (which it once did, a copy of every layer's K and V per token).
    let (cfg, net, rope) = tiny_model("tiny-llama");
    let engine = Engine::new(&net, &rope, cfg.max_position_embeddings);
    let params = SamplingParams {
        n: 2,
        temperature: 0.0,
        max_new_tokens: 200,
        ignore_eos: true,
        ..Default::default()
    };
    let groups = engine.generate(&[vec![1, 2, 3]], &params).unwrap();
    assert!(
        groups[0]
            .rollouts
            .iter()
            .all(|r| r.response_ids.len() == 200)
    );
    let s = engine.stats();
    assert_eq!(s.decode_steps, 199, "{s:?}");
    if net.decode_reads_used_slots_only() {
        // Room costs no compute: prefill reserves 3 + 64 slots, then the capacity doubles
        // (67 -> 134 -> 268) for the 199 decode steps' slots.
        assert_eq!(s.kv_grows, 2, "{s:?}");
    } else {
        // Room is attended over: 64 slots at a time, 3 more chunks after the prefill's.
        assert_eq!(s.kv_grows, 3, "{s:?}");
    }
}

#[test]
fn fork_keeps_the_prefix_and_reuses_the_kv() {
    for name in ["tiny-llama", "tiny-qwen3"] {
        let (cfg, net, rope) = tiny_model(name);
        let engine = Engine::new(&net, &rope, cfg.max_position_embeddings);
        let params = SamplingParams {
            n: 2,
            temperature: 1.0,
            max_new_tokens: 16,
            seed: 5,
            top_logprobs: 5,
            retain_kv: true,
            ..Default::default()
        };
        let groups = engine.generate(&prompts(), &params).unwrap();
        let parent = &groups[0].rollouts[1];
        assert!(parent.has_kv());
        for at in [0usize, 1, 6, 16] {
            engine.reset_stats();
            let kids = engine
                .fork(
                    &[ForkRequest {
                        parent,
                        at,
                        n: 3,
                        first_sample_index: 10,
                    }],
                    &SamplingParams {
                        max_new_tokens: 8,
                        ..params.clone()
                    },
                )
                .unwrap();
            let s = engine.stats();
            if at > 0 {
                assert_eq!(
                    s.prefill_tokens, 0,
                    "{name}: fork at {at} ran the prompt again"
                );
            }
            assert_eq!(kids.len(), 3);
            for (c, kid) in kids.iter().enumerate() {
                assert_eq!(kid.sample_index, 10 + c);
                assert_eq!(
                    kid.response_ids[..at],
                    parent.response_ids[..at],
                    "{name}: at {at}"
                );
                assert_eq!(kid.logprobs[..at], parent.logprobs[..at]);
                assert_eq!(kid.response_ids.len(), at + 8);
                assert_eq!(kid.fork.unwrap().at, at);
                // The new tokens' log-probs are the training path's on the whole sequence.
                let seq: Vec<u32> = kid
                    .prompt_ids
                    .iter()
                    .chain(&kid.response_ids)
                    .copied()
                    .collect();
                let (lp, v) = full_logprobs(&net, &rope, &seq);
                for t in at..kid.response_ids.len() {
                    let pos = kid.prompt_ids.len() - 1 + t;
                    let want = lp[pos * v + kid.response_ids[t] as usize];
                    assert!(
                        (kid.logprobs[t] as f64 - want).abs() < 1e-4,
                        "{name}: at {at} t {t}"
                    );
                }
            }
            // Without the retained KV the prefix is prefilled, and the tokens are the same.
            let mut bare = parent.clone();
            bare.drop_kv();
            engine.reset_stats();
            let again = engine
                .fork(
                    &[ForkRequest {
                        parent: &bare,
                        at,
                        n: 3,
                        first_sample_index: 10,
                    }],
                    &SamplingParams {
                        max_new_tokens: 8,
                        ..params.clone()
                    },
                )
                .unwrap();
            assert!(engine.stats().prefill_tokens > 0);
            for (a, b) in kids.iter().zip(&again) {
                assert_eq!(a.response_ids, b.response_ids);
            }
        }
    }
}

/// One fork call with requests of several parents (different prompts, prompt lengths and
/// branch positions; with and without a retained KV) decodes them in one batch: the children
/// are those of one call per request, in request order.
#[test]
fn fork_batches_requests_of_different_parents() {
    let (cfg, net, rope) = tiny_model("tiny-llama");
    let engine = Engine::new(&net, &rope, cfg.max_position_embeddings);
    let params = SamplingParams {
        n: 2,
        temperature: 1.0,
        max_new_tokens: 12,
        seed: 9,
        top_logprobs: 3,
        retain_kv: true,
        ..Default::default()
    };
    let groups = engine.generate(&prompts(), &params).unwrap();
    let mut bare = groups[3].rollouts[0].clone();
    bare.drop_kv();
    let requests = [
        (&groups[0].rollouts[1], 5usize, 2usize, 10usize),
        (&groups[1].rollouts[0], 0, 1, 3),
        (&groups[2].rollouts[1], 11, 3, 7),
        (&bare, 2, 2, 4),
        (&groups[0].rollouts[0], 12, 1, 20),
    ];
    let reqs: Vec<ForkRequest<'_>> = requests
        .iter()
        .map(|&(parent, at, n, first)| ForkRequest {
            parent,
            at,
            n,
            first_sample_index: first,
        })
        .collect();
    let fp = SamplingParams {
        max_new_tokens: 6,
        ..params.clone()
    };
    engine.reset_stats();
    let together = engine.fork(&reqs, &fp).unwrap();
    let s = engine.stats();
    // Only the parent without a retained KV is prefilled; everything decodes in one batch.
    assert_eq!(s.prefill_calls, 1);
    assert_eq!(s.joins, 1);
    assert_eq!(together.len(), 9);
    let mut i = 0;
    for req in &reqs {
        let alone = engine.fork(std::slice::from_ref(req), &fp).unwrap();
        for kid in alone {
            let got = &together[i];
            assert_eq!(got.prompt_index, kid.prompt_index);
            assert_eq!(got.sample_index, kid.sample_index);
            assert_eq!(got.fork, kid.fork);
            assert_eq!(got.response_ids, kid.response_ids, "request at {}", req.at);
            for (a, b) in got.logprobs.iter().zip(&kid.logprobs) {
                assert!((a - b).abs() < 1e-5);
            }
            assert_eq!(
                got.response_ids[..req.at],
                req.parent.response_ids[..req.at]
            );
            assert!(got.has_kv(), "retain_kv keeps the children's KV");
            i += 1;
        }
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let (cfg, net, rope) = tiny_model("tiny-llama");
    let engine = Engine::new(&net, &rope, cfg.max_position_embeddings);
    let ok = SamplingParams::greedy(4);
    let msg = |e: RolloutError| e.to_string();
    let e = msg(engine.generate(&[vec![1, 2], vec![]], &ok).unwrap_err());
    assert!(e.contains("prompt 1") && e.contains("no tokens"), "{e}");
    let long = vec![1u32; cfg.max_position_embeddings];
    let e = msg(engine.generate(&[long], &ok).unwrap_err());
    assert!(e.contains("context"), "{e}");
    let e = msg(engine.generate(&[vec![1, 999_999]], &ok).unwrap_err());
    assert!(e.contains("vocabulary"), "{e}");
    for (p, field) in [
        (
            SamplingParams {
                max_new_tokens: 0,
                ..ok.clone()
            },
            "max_new_tokens",
        ),
        (
            SamplingParams {
                top_p: 0.0,
                ..ok.clone()
            },
            "top_p",
        ),
        (
            SamplingParams {
                top_p: 1.5,
                ..ok.clone()
            },
            "top_p",
        ),
        (
            SamplingParams {
                temperature: -0.5,
                ..ok.clone()
            },
            "temperature",
        ),
        (
            SamplingParams {
                min_p: 2.0,
                ..ok.clone()
            },
            "min_p",
        ),
        (
            SamplingParams {
                top_logprobs: 21,
                ..ok.clone()
            },
            "top_logprobs",
        ),
        (SamplingParams { n: 0, ..ok.clone() }, "n must"),
        (
            SamplingParams {
                stop_strings: vec!["x".into()],
                ..ok.clone()
            },
            "tokenizer",
        ),
    ] {
        let e = msg(engine.generate(&[vec![1, 2]], &p).unwrap_err());
        assert!(e.contains(field), "{field}: {e}");
    }
    // A response stops at the end of the context.
    let near = vec![1u32; cfg.max_position_embeddings - 3];
    let g = engine
        .generate(&[near], &SamplingParams::greedy(100))
        .unwrap();
    assert_eq!(g[0].rollouts[0].response_ids.len(), 3);
    assert_eq!(g[0].rollouts[0].finish_reason, FinishReason::Length);
}
