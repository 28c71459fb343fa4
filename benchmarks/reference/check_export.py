"""Checks that transformers opens a directory written by `kiln export` unchanged, and that the
model it loads reproduces the SmolLM2 fixtures (tokenizer, chat template, top-50 logits).

    python benchmarks/reference/check_export.py --model /tmp/smollm2-hf \
        --fixtures ../shared/fixtures/smollm2-135m
"""

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--fixtures", required=True)
    args = p.parse_args()
    fx = Path(args.fixtures)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()

    tcases = json.loads((fx / "tokenizer_cases.json").read_text())
    for c in tcases["tokenization"]:
        ids = tok.encode(c["text"], add_special_tokens=False)
        assert ids == c["ids"], f"tokenization of {c['text']!r}: {ids} != {c['ids']}"
    for c in tcases["chat_template"]:
        text = tok.apply_chat_template(c["messages"], tokenize=False, add_generation_prompt=True)
        assert text == c["rendered"], f"chat template: {text!r} != {c['rendered']!r}"

    worst = 0.0
    for c in json.loads((fx / "logit_cases.json").read_text())["cases"]:
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([c["input_ids"]])).logits[0, -1]
        want = torch.tensor(c["last_top50_logits"])
        got = logits[torch.tensor(c["last_top50_ids"])]
        worst = max(worst, (got - want).abs().max().item())
    assert worst < 2e-3, f"top-50 logits differ by {worst}"
    print(json.dumps({"ok": True, "top50_max_abs_diff": worst,
                      "tokenizer_cases": len(tcases["tokenization"]),
                      "chat_cases": len(tcases["chat_template"])}))


if __name__ == "__main__":
    main()
