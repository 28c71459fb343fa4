"""Table of the multidomain comparison: held-out greedy accuracy per domain at the final step
(mean +- standard deviation over seeds), with the SFT starting point, from each run's
metrics.jsonl. Usage: python3 benchmarks/multidomain_table.py OUT_DIR SEED..."""
import json
import statistics
import sys

out, seeds = sys.argv[1], sys.argv[2:]
tasks = ["arithmetic", "countdown", "instructions"]


def evals(path):
    rows = {}
    for line in open(path):
        d = json.loads(line)
        acc = {t: d.get(f"eval/{t}/accuracy") for t in tasks}
        if all(v is not None for v in acc.values()):
            rows[d["step"]] = acc
    return rows


def cell(values):
    m = statistics.mean(values) * 100
    s = statistics.stdev(values) * 100 if len(values) > 1 else 0.0
    return f"{m:.1f} ± {s:.1f}"


print(f"| run | {' | '.join(tasks)} | mean |")
print(f"|---|{'---|' * (len(tasks) + 1)}")
start = [evals(f"{out}/mixed-seed{s}/metrics.jsonl")[0] for s in seeds]
print(f"| after SFT (step 0) | {' | '.join(cell([r[t] for r in start]) for t in tasks)} | "
      f"{cell([statistics.mean(r.values()) for r in start])} |")
for run in ["mixed", "pcgrad", "mgs", "sequential"]:
    last = []
    for s in seeds:
        rows = evals(f"{out}/{run}-seed{s}/metrics.jsonl")
        last.append(rows[max(rows)])
    print(f"| multidomain-{run} | {' | '.join(cell([r[t] for r in last]) for t in tasks)} | "
          f"{cell([statistics.mean(r.values()) for r in last])} |")
