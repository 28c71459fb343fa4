"""Scoring without autodiff in PyTorch/transformers: the peer side of `kiln bench score`.
Same rows (the splitmix64 rows of train_bench.py), same f32 weights (a directory kiln
exported), same thread count, same work: under torch.no_grad, per micro-batch a forward over
prompt + response (the last token is never an input), logits of the response positions only
(`logits_to_keep`), log_softmax and the log-prob of each response token, as a trainer computes
old and reference log-probs (`--entropy` adds each token's entropy).

Prints one JSON object like kiln's: tokens_per_s, step_s (median pass), peak_rss_mb."""

import argparse
import json
import resource
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from train_bench import synthetic_rows


def score(model, ids, resp, entropy):
    logits = model(input_ids=ids[:, :-1], use_cache=False, logits_to_keep=resp).logits
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, ids[:, -resp:].unsqueeze(-1)).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1) if entropy else None
    return logp, ent


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="Hugging Face model directory")
    p.add_argument("--batch", type=int, default=8, help="rows scored per pass")
    p.add_argument("--seq", type=int, default=320, help="tokens per row (prompt + response)")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--micro-batch", type=int, default=8, help="rows per forward")
    p.add_argument("--entropy", action="store_true", help="also each token's entropy")
    p.add_argument("--iters", type=int, default=3, help="timed passes (median reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="one JSON object (the default output too)")
    args = p.parse_args()
    if min(args.batch, args.iters, args.micro_batch, args.prompt_len) < 1:
        p.error("--batch, --iters, --micro-batch and --prompt-len must be positive")
    if args.seq <= args.prompt_len:
        p.error("--seq must exceed --prompt-len")
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    if args.seq > model.config.max_position_embeddings:
        p.error(f"--seq exceeds the model's context ({model.config.max_position_embeddings})")
    resp = args.seq - args.prompt_len
    ids, _ = synthetic_rows(args.seed, args.batch, args.seq, model.config.vocab_size)
    micro = [slice(i, min(i + args.micro_batch, args.batch)) for i in range(0, args.batch, args.micro_batch)]

    def one_pass():
        with torch.no_grad():
            return sum(score(model, ids[m], resp, args.entropy)[0].double().sum().item() for m in micro)

    one_pass()  # warm-up
    times, logp_sum = [], float("nan")
    for _ in range(args.iters):
        t0 = time.perf_counter()
        logp_sum = one_pass()
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    print(json.dumps({
        "tokens_per_s": args.batch * args.seq / step_s, "step_s": step_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "batch": args.batch, "seq": args.seq, "prompt_len": args.prompt_len,
        "micro_batch": args.micro_batch, "entropy": args.entropy, "iters": args.iters,
        "logp_sum": logp_sum, "threads": torch.get_num_threads(), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
