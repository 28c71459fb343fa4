"""Full-sequence forward throughput of a causal LM in PyTorch/transformers: the peer side of
`kiln bench forward`. Same tokens (same formula), same f32 weights (a directory kiln exported),
same thread count. Prints one JSON object like kiln's: tokens_per_s, step_s, peak_rss_mb."""

import argparse
import json
import resource
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="Hugging Face model directory")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    vocab = model.config.vocab_size
    ids = torch.tensor(
        [[(b * 7919 + t * 104729 + 17) % vocab for t in range(args.seq)] for b in range(args.batch)]
    )
    with torch.inference_mode():
        model(input_ids=ids, use_cache=False)
        start = time.perf_counter()
        for _ in range(args.iters):
            model(input_ids=ids, use_cache=False).logits
        step = (time.perf_counter() - start) / args.iters
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tokens_per_s": args.batch * args.seq / step, "step_s": step,
                      "peak_rss_mb": peak_mb, "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
