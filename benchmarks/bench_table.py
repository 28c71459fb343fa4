"""Prints the table of `benchmarks/bench.sh` from its JSONL (one line per benchmark, side and
run): tokens/s of each side and their ratio (new tokens/s for rollouts), seconds per step, peak
RSS. A benchmark run several times (alternating sides) shows each side's median of each number.

    python benchmarks/bench_table.py runs/bench/bench-....jsonl"""

import json
import statistics
import sys


def main():
    runs = {}
    for line in open(sys.argv[1]):
        d = json.loads(line)
        runs.setdefault(d["bench"], {}).setdefault(d["side"], []).append(d)
    # Each side's median of every number over its runs (the first run's other fields).
    rows = {}
    for name, sides in runs.items():
        for side, ds in sides.items():
            merged = dict(ds[0])
            for key, value in ds[0].items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    merged[key] = statistics.median(d[key] for d in ds)
            merged["runs"] = len(ds)
            rows.setdefault(name, {})[side] = merged
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
        note = ", ".join(
            ["new tokens"] * rollout + [f"median of {k['runs']}"] * (k["runs"] > 1)
        )
        print(f"| {name}{f' ({note})' if note else ''} | {kt:.1f} | {pt:.1f} | {kt / pt:.2f}x "
              f"| {ks:.2f} | {ps:.2f} | {k['peak_rss_mb']:.0f} | {p['peak_rss_mb']:.0f} "
              f"| {p['peak_rss_mb'] / k['peak_rss_mb']:.2f}x |")


if __name__ == "__main__":
    main()
