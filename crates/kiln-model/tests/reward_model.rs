//! Sequence classification (reward models) against transformers: ../shared/fixtures/tiny-llama-rm
//! is a `LlamaForSequenceClassification` whose scores transformers 5.24 computed, one row right-padded.

mod common;

use common::*;
use kiln_model::classifier::last_token_index;
use kiln_model::{HeadInit, SequenceClassifier, TokenBatch};

fn fixture_batch() -> (TokenBatch, Vec<f64>) {
    let (shape, ids) = expected("tiny-llama-rm", "input_ids");
    let (_, mask) = expected("tiny-llama-rm", "attention_mask");
    let (_, scores) = expected("tiny-llama-rm", "scores");
    let batch = TokenBatch {
        ids: ids.iter().map(|&x| x as u32).collect(),
        batch: shape[0],
        seq: shape[1],
        mask: Some(mask.iter().map(|&m| m == 1.0).collect()),
        positions: None,
    };
    (batch, scores)
}

#[test]
fn reward_scores_match_transformers_with_right_padding() {
    let dir = fixture("tiny-llama-rm");
    let (cfg, _, rm, rope) = SequenceClassifier::load(&dir, &device()).unwrap();
    assert_eq!(rm.num_labels(), 1);
    assert!(rm.model.lm_head.is_none());
    let (batch, want) = fixture_batch();
    // The padded row really is padded, so the test covers reading before the pads.
    assert!(!batch.is_real(1, batch.seq - 1));
    assert_eq!(last_token_index(&batch, cfg.pad_token_id)[1], 5);
    let got = to_vec(rm.sequence_scores(&rope, &batch, cfg.pad_token_id));
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        println!("row {i}: kiln {g:.6}, transformers {w:.6}");
        assert!((g as f64 - w).abs() < 1e-4, "row {i}: {g} vs {w}");
    }
}

#[test]
fn a_saved_reward_model_reloads_to_the_same_scores() {
    let dir = fixture("tiny-llama-rm");
    let (cfg, json, rm, rope) = SequenceClassifier::load(&dir, &device()).unwrap();
    let out = std::env::temp_dir().join(format!("kiln-rm-roundtrip-{}", std::process::id()));
    rm.save_hf(&out, &json, &cfg).unwrap();
    let (_, json2, back, _) = SequenceClassifier::load(&out, &device()).unwrap();
    assert_eq!(json2["architectures"][0], "LlamaForSequenceClassification");
    assert_eq!(json2["num_labels"], 1);
    let (batch, _) = fixture_batch();
    let a = to_vec(rm.sequence_scores(&rope, &batch, cfg.pad_token_id));
    let b = to_vec(back.sequence_scores(&rope, &batch, cfg.pad_token_id));
    assert_eq!(a, b);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_causal_lm_is_not_a_reward_model_and_a_new_head_is_seeded() {
    // tiny-llama has an lm_head but no score head: a named error, not a panic.
    let err = SequenceClassifier::load(&fixture("tiny-llama"), &device()).unwrap_err();
    assert!(err.to_string().contains("score.weight"), "{err}");
    // A head added to a causal LM's trunk: zeros give 0 everywhere, a seed gives the same head.
    let (_, net, rope) = tiny_model("tiny-llama");
    let (batch, _) = fixture_batch();
    let zero = SequenceClassifier::from_trunk(net.clone(), 1, HeadInit::Zeros);
    assert!(zero.model.lm_head.is_none());
    let values = to_vec(zero.token_scores(&rope, &batch));
    assert_eq!(values.len(), batch.batch * batch.seq);
    assert!(values.iter().all(|&v| v == 0.0));
    let init = HeadInit::Normal { std: 0.02, seed: 3 };
    let a = SequenceClassifier::from_trunk(net.clone(), 1, init);
    let b = SequenceClassifier::from_trunk(net, 1, init);
    let (sa, sb) = (
        to_vec(a.sequence_scores(&rope, &batch, Some(0))),
        to_vec(b.sequence_scores(&rope, &batch, Some(0))),
    );
    assert_eq!(sa, sb);
    assert!(sa.iter().any(|&s| s != 0.0));
}
