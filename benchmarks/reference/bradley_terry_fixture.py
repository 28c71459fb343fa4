"""Reference numbers for kiln's Bradley-Terry reward-model loss, computed by PyTorch.

Runs transformers' LlamaForSequenceClassification (../shared/fixtures/tiny-llama-rm) on three
(chosen, rejected) pairs of different lengths, right-padded with pad id 0, and writes the loss
-mean(log sigmoid(r_chosen - r_rejected - margin)) (TRL's RewardTrainer loss), with and without
margins, and the gradients of a few parameters to
crates/kiln-train/tests/fixtures/bradley_terry.safetensors.

    /path/to/venv/bin/python benchmarks/reference/bradley_terry_fixture.py
"""

import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT.parent / "shared" / "fixtures" / "tiny-llama-rm"
OUT = ROOT / "crates" / "kiln-train" / "tests" / "fixtures" / "bradley_terry.safetensors"
PARAMS = [
    "score.weight",
    "model.norm.weight",
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.1.mlp.down_proj.weight",
]

torch.manual_seed(0)
model = AutoModelForSequenceClassification.from_pretrained(MODEL, dtype=torch.float32)
model.eval()

lengths = [(7, 4), (5, 9), (3, 3)]
rows = []
for lc, lr in lengths:
    rows.append(torch.randint(3, 256, (lc,)))
    rows.append(torch.randint(3, 256, (lr,)))
seq = max(len(r) for r in rows)
ids = torch.zeros(len(rows), seq, dtype=torch.long)
mask = torch.zeros(len(rows), seq, dtype=torch.long)
for i, r in enumerate(rows):
    ids[i, : len(r)] = r
    mask[i, : len(r)] = 1
margins = torch.tensor([0.5, -0.25, 1.0])

out = {"input_ids": ids, "attention_mask": mask, "margins": margins}
for name, m in [("plain", torch.zeros(3)), ("margin", margins)]:
    model.zero_grad()
    scores = model(input_ids=ids, attention_mask=mask).logits[:, 0]
    chosen, rejected = scores[0::2], scores[1::2]
    loss = -F.logsigmoid(chosen - rejected - m).mean()
    loss.backward()
    out[f"{name}.scores"] = scores.detach()
    out[f"{name}.loss"] = loss.detach().reshape(1)
    params = dict(model.named_parameters())
    for p in PARAMS:
        out[f"{name}.grad.{p}"] = params[p].grad.detach().clone()

OUT.parent.mkdir(parents=True, exist_ok=True)
save_file({k: v.contiguous() for k, v in out.items()}, str(OUT))
print(f"wrote {OUT}: loss plain {out['plain.loss'].item():.6f}, margin {out['margin.loss'].item():.6f}")
