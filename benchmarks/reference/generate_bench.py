"""Batched generation throughput of a causal LM in PyTorch/transformers: the peer side of
`kiln bench rollout`. Same prompts (same token formula), same f32 weights (a directory kiln
exported), same thread count, same definitions:

- new_tokens_per_s: batch x n x new_tokens over the wall time of one `generate` call (prefill
  included); every row makes exactly new_tokens tokens (eos ignored via min_new_tokens).
- prefill_tokens_per_s: prompt tokens over the wall time of a `generate` call for one new token.

transformers has no prompt sharing: with --n N each prompt is repeated N times
(num_return_sequences), so its prefill is paid N times. Prints one JSON object."""

import argparse
import json
import resource
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="Hugging Face model directory")
    p.add_argument("--batch", type=int, default=8, help="distinct prompts")
    p.add_argument("--n", type=int, default=1, help="samples per prompt")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    vocab = model.config.vocab_size
    ids = torch.tensor(
        [[(b * 7919 + t * 104729 + 17) % vocab for t in range(args.prompt_len)] for b in range(args.batch)]
    )
    mask = torch.ones_like(ids)
    sampling = dict(do_sample=False)
    if args.temperature > 0:
        sampling = dict(do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0)

    def gen(new):
        return model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
            num_return_sequences=args.n, pad_token_id=0, **sampling,
        )

    with torch.inference_mode():
        gen(2)  # warm-up
        start = time.perf_counter()
        gen(1)
        prefill_s = time.perf_counter() - start
        start = time.perf_counter()
        out = gen(args.new_tokens)
        total_s = time.perf_counter() - start
    new_tokens = (out.shape[1] - args.prompt_len) * out.shape[0]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "new_tokens_per_s": new_tokens / total_s,
        "prefill_tokens_per_s": args.batch * args.n * args.prompt_len / prefill_s,
        "total_s": total_s, "prefill_s": prefill_s, "new_tokens": new_tokens,
        "peak_rss_mb": peak_mb, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "batch": args.batch, "n": args.n,
    }))


if __name__ == "__main__":
    main()
