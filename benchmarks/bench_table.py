"""Prints the table of `benchmarks/bench.sh` from its JSONL (one line per benchmark and side):
tokens/s of each side and their ratio (new tokens/s for rollouts), seconds per step, peak RSS.

    python benchmarks/bench_table.py runs/bench/bench-....jsonl"""

import json
import sys


def main():
    rows = {}
    for line in open(sys.argv[1]):
        d = json.loads(line)
        rows.setdefault(d["bench"], {})[d["side"]] = d
    torch = next((d["torch"] for r in rows.values() for d in r.values() if "torch" in d), "?")
    print(f"kiln vs PyTorch {torch}, same weights, inputs and threads; ratio > 1: kiln faster / smaller")
    print()
    print("| benchmark | kiln tok/s | peer tok/s | speed ratio | kiln s/step | peer s/step "
          "| kiln RSS MiB | peer RSS MiB | RSS ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, sides in rows.items():
        k, p = sides.get("kiln"), sides.get("peer")
        if not (k and p):
            print(f"| {name} | missing {'peer' if k else 'kiln'} result | | | | | | | |")
            continue
        rollout = "new_tokens_per_s" in k
        key = "new_tokens_per_s" if rollout else "tokens_per_s"
        kt, pt = k[key], p[key]
        # A rollout's step is the whole generate call; the others report their own step.
        ks = k.get("step_s", k.get("total_s", float("nan")))
        ps = p.get("step_s", p.get("total_s", float("nan")))
        print(f"| {name}{' (new tokens)' if rollout else ''} | {kt:.1f} | {pt:.1f} | {kt / pt:.2f}x "
              f"| {ks:.2f} | {ps:.2f} | {k['peak_rss_mb']:.0f} | {p['peak_rss_mb']:.0f} "
              f"| {p['peak_rss_mb'] / k['peak_rss_mb']:.2f}x |")


if __name__ == "__main__":
    main()
