"""One GRPO update of a causal LM in PyTorch/transformers: the peer side of `kiln bench train`.
Same rows and advantages (same splitmix64 formula), same f32 weights (a directory kiln
exported), same thread count, same step:

- per micro-batch: forward over prompt + response (the last token is never an input), logits
  of the response positions only (`logits_to_keep`), token log-probs, the clipped PPO/GRPO
  surrogate (clip 0.2, token-mean over the whole batch, as TRL's GRPO loss), backward;
- clip_grad_norm_(1.0), torch.optim.AdamW (lr 1e-6, betas 0.9/0.999, eps 1e-8, wd 0.01).

Old log-probs are the policy's own, computed once before timing. Prints one JSON object like
kiln's: tokens_per_s, step_s (median), peak_rss_mb, backward_s, optimizer_s, combine_s (0)."""

import argparse
import json
import resource
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

MASK = (1 << 64) - 1


def splitmix(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def draw(seed, stream, i):
    return splitmix(splitmix(seed ^ ((stream * 0x100000001B3) & MASK)) ^ i)


def synthetic_rows(seed, batch, seq, vocab):
    rows = [[draw(seed, 1, b * seq + t) % vocab for t in range(seq)] for b in range(batch)]
    adv = [(draw(seed, 2, b) >> 11) / float(1 << 53) * 2.0 - 1.0 for b in range(batch)]
    return torch.tensor(rows), torch.tensor(adv, dtype=torch.float32)


def token_logp(model, ids, resp):
    """Log-probs [B, resp] of the last `resp` tokens of `ids`, predicted from the rest."""
    logits = model(input_ids=ids[:, :-1], use_cache=False, logits_to_keep=resp).logits
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, -resp:].unsqueeze(-1)).squeeze(-1)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="Hugging Face model directory")
    p.add_argument("--batch", type=int, default=8, help="rows per optimizer step")
    p.add_argument("--seq", type=int, default=320, help="tokens per row (prompt + response)")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--micro-batch", type=int, default=8, help="rows per forward/backward")
    p.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="one JSON object (the default output too)")
    args = p.parse_args()
    if args.batch < 1 or args.steps < 1 or args.micro_batch < 1 or args.prompt_len < 1:
        p.error("--batch, --steps, --micro-batch and --prompt-len must be positive")
    if args.seq <= args.prompt_len:
        p.error("--seq must exceed --prompt-len")
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.train()
    if args.seq > model.config.max_position_embeddings:
        p.error(f"--seq exceeds the model's context ({model.config.max_position_embeddings})")
    resp = args.seq - args.prompt_len
    ids, adv = synthetic_rows(args.seed, args.batch, args.seq, model.config.vocab_size)
    micro = [slice(i, min(i + args.micro_batch, args.batch)) for i in range(0, args.batch, args.micro_batch)]
    with torch.no_grad():
        old_logp = torch.cat([token_logp(model, ids[m], resp) for m in micro])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.01)
    num_tokens = args.batch * resp
    eps = 0.2
    times, back, optim = [], [], []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = 0.0
        for m in micro:
            logp = token_logp(model, ids[m], resp)
            ratio = torch.exp(logp - old_logp[m])
            a = adv[m].unsqueeze(1)
            per_token = -torch.min(ratio * a, torch.clamp(ratio, 1 - eps, 1 + eps) * a)
            part = per_token.sum() / num_tokens
            part.backward()
            loss += part.item()
        t1 = time.perf_counter()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        opt.step()
        t2 = time.perf_counter()
        if step >= args.warmup:
            times.append(t2 - t0)
            back.append(t1 - t0)
            optim.append(t2 - t1)
    step_s = statistics.median(times)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "tokens_per_s": args.batch * args.seq / step_s, "step_s": step_s, "peak_rss_mb": peak_mb,
        "backward_s": statistics.median(back), "combine_s": 0.0,
        "optimizer_s": statistics.median(optim), "surgery": "none", "domains": 1,
        "batch": args.batch, "seq": args.seq, "prompt_len": args.prompt_len,
        "micro_batch": args.micro_batch, "steps": args.steps, "loss": loss, "grad_norm": grad_norm,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
