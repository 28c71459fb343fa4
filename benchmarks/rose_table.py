"""Table of the GRPO-vs-ROSE comparison from each run's metrics.jsonl: held-out greedy accuracy
and pass@8 after SFT and at the last step, and per RL step the mean response length, the tokens
the engine generated, the responses' tokens and the seconds per step (mean +- standard deviation
over seeds). Usage: python3 benchmarks/rose_table.py OUT_DIR SEED..."""
import json
import statistics
import sys

out, seeds = sys.argv[1], sys.argv[2:]


def load(run, seed):
    evals, steps = {}, []
    for line in open(f"{out}/{run}-seed{seed}/metrics.jsonl"):
        d = json.loads(line)
        if "eval/countdown/accuracy" in d:
            evals[d["step"]] = d
        if "rollout/generated_tokens" in d:
            steps.append(d)
    return evals, steps


def cell(values, scale=1.0, digits=1):
    m = statistics.mean(values) * scale
    s = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


cols = ["accuracy after SFT %", "accuracy %", "pass@8 %", "response length",
        "generated tokens / step", "response tokens / step", "s / step"]
print(f"| run | {' | '.join(cols)} |")
print(f"|---|{'---|' * len(cols)}")
for run in ["grpo", "rose"]:
    rows = [load(run, s) for s in seeds]
    first = [e[min(e)] for e, _ in rows]
    last = [e[max(e)] for e, _ in rows]
    mean = lambda st, k: statistics.mean(d[k] for d in st)
    vals = [
        cell([e["eval/countdown/accuracy"] for e in first], 100),
        cell([e["eval/countdown/accuracy"] for e in last], 100),
        cell([e["eval/countdown/pass@8"] for e in last], 100),
        cell([mean(st, "response_length/mean") for _, st in rows]),
        cell([mean(st, "rollout/generated_tokens") for _, st in rows], digits=0),
        cell([mean(st, "rollout/new_tokens") for _, st in rows], digits=0),
        cell([mean(st, "time/step_s") for _, st in rows], digits=2),
    ]
    print(f"| tiny-countdown-{run} | {' | '.join(vals)} |")
