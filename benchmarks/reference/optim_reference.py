#!/usr/bin/env python3
"""Golden numbers for kiln-optim, computed with PyTorch from ALGORITHMS.md sections 1 and 2.

Run once (outputs are committed):
    /root/.venvs/ref/bin/python benchmarks/reference/optim_reference.py

Writes crates/kiln-optim/tests/fixtures/optim_golden.safetensors (inputs, losses, gradients with
respect to the logits, advantages, AdamW trajectories) and optim_golden.json (the case configs).
Everything is computed in float64 from float32 inputs; the kiln tests run in float32.
"""
import json
import math
import os

import torch
from safetensors.torch import save_file

torch.manual_seed(1234)
D = torch.float64
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "kiln-optim", "tests", "fixtures")
T = {}  # tensors to save (stored as float32 / int64)
CASES = []


def put(name, t):
    T[name] = t.detach().clone().contiguous()


# --------------------------------------------------------------------------- inputs
B, L, V = 3, 5, 11
L_MAX = 6  # the recipe's max response length (Dr.GRPO's normaliser)
N = B * L
lengths = [5, 3, 4]
mask = torch.zeros(B, L, dtype=D)
for b, n in enumerate(lengths):
    mask[b, :n] = 1.0
mask = mask.reshape(N)
logits = (torch.randn(N, V) * 2.0).float()
targets = torch.randint(0, V, (N,))
adv = torch.randn(N).float()
with torch.no_grad():
    lp0 = torch.log_softmax(logits.to(D), -1).gather(-1, targets[:, None])[:, 0]
noise = torch.randn(N) * 0.3
old = lp0 + noise.to(D)
# Force a few tokens into the dual-clip regime (A < 0, ratio > 3) and both clip sides.
adv[1], old[1] = -1.3, lp0[1] - 1.5
adv[6], old[6] = -0.7, lp0[6] - 2.0
adv[2], old[2] = 0.9, lp0[2] - 0.5
adv[11], old[11] = 1.1, lp0[11] + 0.6
old = old.float()
ref = (lp0 + torch.randn(N, dtype=D) * 0.5)
ref[3] = lp0[3] - 25.0  # x = ref - logp < -20: clamped
ref[7] = lp0[7] + 4.0   # k3 = e^4 - 5 > 10: clamped
ref = ref.float()
put("in.logits", logits)
put("in.targets", targets)
put("in.adv", adv)
put("in.old_logp", old)
put("in.ref_logp", ref)
put("in.mask", mask.float())


def agg(l, mode):
    m = mask
    lm = (l * m).reshape(B, L)
    mm = m.reshape(B, L)
    if mode == "token-mean":
        return lm.sum() / mm.sum()
    if mode == "seq-mean-token-mean":
        return (lm.sum(1) / mm.sum(1)).mean()
    if mode == "seq-mean-token-sum":
        return lm.sum(1).mean()
    if mode == "seq-mean-token-sum-norm":
        return lm.sum() / (B * L_MAX)
    raise ValueError(mode)


def ppo_tok(logp, cfg):
    ratio = torch.exp(torch.clamp(logp - old.to(D), -20.0, 20.0))
    A = adv.to(D)
    l1 = -A * ratio
    l2 = -A * torch.clamp(ratio, 1.0 - cfg["clip_low"], 1.0 + cfg["clip_high"])
    l = torch.maximum(l1, l2)
    if cfg.get("dual_clip") is not None:
        l3 = -A * cfg["dual_clip"]
        l = torch.where(A < 0, torch.minimum(l, l3), l)
    return l


def kl_tok(logp, est):
    x = ref.to(D) - logp
    if est == "k1":
        return -x
    if est == "k2":
        return 0.5 * x * x
    x = torch.clamp(x, -20.0, 20.0)
    return torch.clamp(torch.exp(x) - x - 1.0, -10.0, 10.0)


def global_entropy(z):
    lsm = torch.log_softmax(z, -1)
    return -(lsm.exp() * lsm).sum(-1)


def tre(z, k=None, p=None, cap=256):
    Vz = z.shape[-1]
    M = min(k if k is not None else cap, Vz)
    with torch.no_grad():
        order = torch.argsort(z, dim=-1, descending=True)[:, :M]
        if p is None:
            keep = torch.ones(z.shape[0], M, dtype=torch.bool)
        else:
            probs = torch.softmax(z, -1).gather(-1, order)
            cum_excl = torch.cumsum(probs, -1) - probs
            keep = cum_excl < p
            keep[:, 0] = True
    zs = z.gather(-1, order)
    zm = torch.where(keep, zs, torch.full_like(zs, -math.inf))
    q = torch.softmax(zm, -1)
    logq = torch.where(keep, torch.log_softmax(zm, -1), torch.zeros_like(zs))
    h = -(q * logq).sum(-1)
    size = keep.sum(-1).to(D)
    scale = torch.where(size > 1, math.log(Vz) / torch.log(torch.clamp(size, min=2.0)), torch.zeros_like(size))
    return h * scale, size


def run_case(name, cfg, z_in=None, tgt=None):
    """Loss and d loss / d logits for one config."""
    z = (logits if z_in is None else z_in).to(D).clone().requires_grad_(True)
    tg = targets if tgt is None else tgt
    lsm = torch.log_softmax(z, -1)
    logp = lsm.gather(-1, tg[:, None])[:, 0]
    mode = cfg.get("agg", "token-mean")
    l = ppo_tok(logp, cfg["ppo"])
    extra = {}
    if cfg.get("baseline") == "forking":
        with torch.no_grad():
            H = global_entropy(z)
            valid = mask > 0
            n = int(valid.sum())
            kk = max(1, min(n, math.ceil(cfg["top_frac"] * n)))
            thr = torch.topk(H[valid], kk).values[-1]
            fmask = (valid & (H >= thr)).to(D)
        l = l * fmask
        extra["forking_mask"] = fmask
    loss = agg(l, mode)
    if cfg.get("baseline") == "kl_cov":
        with torch.no_grad():
            valid = mask > 0
            idx = torch.nonzero(valid)[:, 0]
            a = adv.to(D)[idx]
            lp = logp.detach()[idx]
            cov = (a - a.mean()) * (lp - lp.mean())
            kk = max(1, int(math.floor(cfg["ratio"] * len(idx))))
            top = idx[torch.topk(cov, kk).indices]
            cmask = torch.zeros(N, dtype=D)
            cmask[top] = 1.0
        pen = cfg["kl_cov_coef"] * (logp - old.to(D)).abs() * cmask
        loss = loss + agg(pen, mode)
        extra["kl_cov_mask"] = cmask
    if "kl" in cfg:
        loss = loss + cfg["kl"]["coef"] * agg(kl_tok(logp, cfg["kl"]["est"]), mode)
    ent = cfg.get("entropy")
    if ent is not None:
        if ent["type"] == "global":
            H = global_entropy(z)
        elif ent["type"] == "tre-k":
            H, _ = tre(z, k=ent["k"])
        else:
            H, size = tre(z, p=ent["p"])
            extra["region_size"] = size
        loss = loss - ent["coef"] * (H * mask).sum() / mask.sum()
    loss.backward()
    put(f"case.{name}.grad", z.grad.float())
    for k_, v_ in extra.items():
        put(f"case.{name}.{k_}", v_.float())
    CASES.append({"name": name, "cfg": cfg, "loss": loss.item()})


ASYM = {"clip_low": 0.2, "clip_high": 0.28, "dual_clip": 3.0}
SYM = {"clip_low": 0.2, "clip_high": 0.2, "dual_clip": None}
run_case("ppo_sym", {"ppo": SYM})
run_case("ppo_asym_dual", {"ppo": ASYM})
for mode in ["seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]:
    run_case(f"agg_{mode}", {"ppo": ASYM, "agg": mode})
for est in ["k1", "k2", "k3"]:
    run_case(f"kl_{est}", {"ppo": ASYM, "kl": {"est": est, "coef": 0.5}})
run_case("kl_k3_seqsum", {"ppo": ASYM, "agg": "seq-mean-token-sum", "kl": {"est": "k3", "coef": 0.5}})
run_case("entropy_global", {"ppo": ASYM, "entropy": {"type": "global", "coef": 0.5}})
for k in [2, 5]:
    run_case(f"tre_k{k}", {"ppo": ASYM, "entropy": {"type": "tre-k", "k": k, "coef": 0.5}})
for p in [0.9, 0.99]:
    run_case(f"tre_p{p}", {"ppo": ASYM, "entropy": {"type": "tre-p", "p": p, "coef": 0.5}})
run_case("forking", {"ppo": ASYM, "baseline": "forking", "top_frac": 0.2})
run_case("kl_cov", {"ppo": ASYM, "baseline": "kl_cov", "ratio": 0.2, "kl_cov_coef": 1.0})

# TRE-P on a 300-token vocabulary: near-flat rows hit the 256 cap, spiked rows have |S| = 1.
VB = 300
zb = torch.randn(N, VB) * 1.5
for r in [0, 4, 9]:
    zb[r] = torch.randn(VB) * 0.01  # near uniform: 297 tokens needed for 0.99 -> capped at 256
for r in [2, 8]:
    zb[r, 17] += 40.0  # |S| = 1
zb = zb.float()
tb = torch.randint(0, VB, (N,))
# the targets of the spiked rows are the spike (ratio near 1) for rows 2, not for 8
tb[2] = 17
put("in.big_logits", zb)
put("in.big_targets", tb)
for p in [0.9, 0.99]:
    run_case(f"tre_p{p}_big", {"ppo": ASYM, "entropy": {"type": "tre-p", "p": p, "coef": 0.5}}, zb, tb)
run_case("tre_k2_big", {"ppo": ASYM, "entropy": {"type": "tre-k", "k": 2, "coef": 0.5}}, zb, tb)
run_case("entropy_global_big", {"ppo": ASYM, "entropy": {"type": "global", "coef": 0.5}}, zb, tb)

# --------------------------------------------------------------------------- value loss
vals = torch.randn(N).float()
old_vals = (vals.to(D) + torch.randn(N, dtype=D) * 0.6).float()
rets = torch.randn(N).float()
put("in.values", vals)
put("in.old_values", old_vals)
put("in.returns", rets)
v = vals.to(D).clone().requires_grad_(True)
vc = torch.clamp(v, old_vals.to(D) - 0.5, old_vals.to(D) + 0.5)
vl = 0.5 * torch.maximum((v - rets.to(D)) ** 2, (vc - rets.to(D)) ** 2)
vloss = (vl * mask).sum() / mask.sum()
vloss.backward()
put("value.grad", v.grad.float())
VALUE_LOSS = vloss.item()

# --------------------------------------------------------------------------- advantages
G, NG = 4, 3
rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.3, 0.9, -0.2, 0.5, 0.0, 0.0, 1.0, 0.0]).float()
r = rewards.to(D).reshape(NG, G)
mean = r.mean(1, keepdim=True)
std = r.std(1, keepdim=True)  # Bessel
put("adv.rewards", rewards)
put("adv.grpo", ((r - mean) / (std + 1e-6)).reshape(-1).float())
put("adv.dr_grpo", (r - mean).reshape(-1).float())
put("adv.rloo", (r - (r.sum(1, keepdim=True) - r) / (G - 1)).reshape(-1).float())
LA = 6
alen = [6, 2, 4, 5, 1, 6, 3, 3, 6, 2, 4, 6]
amask = torch.zeros(NG * G, LA, dtype=D)
for i, n in enumerate(alen):
    amask[i, :n] = 1.0
put("adv.mask", amask.float())


def masked_whiten(x, m):
    n = m.sum()
    mu = (x * m).sum() / n
    var = (((x - mu) ** 2) * m).sum() / n * (n / (n - 1))
    return (x - mu) * torch.rsqrt(var + 1e-8) * m


tok = (r - mean).reshape(-1, 1) * amask
put("adv.rpp", masked_whiten(tok, amask).float())

# GAE: per-token rewards with the scalar on the last token plus a small per-token term.
BG, LG = 3, 6
gmask = torch.zeros(BG, LG, dtype=D)
for i, n in enumerate([6, 4, 2]):
    gmask[i, :n] = 1.0
tr = torch.randn(BG, LG, dtype=D) * 0.05 * gmask
for i, n in enumerate([6, 4, 2]):
    tr[i, n - 1] += float(i == 0) + 0.5 * float(i == 2)
tr = tr.float().to(D)
gv = torch.randn(BG, LG).float().to(D)
put("gae.rewards", tr.float())
put("gae.values", gv.float())
put("gae.mask", gmask.float())
for tag, gamma, lam in [("g1", 1.0, 1.0), ("g099", 0.99, 0.95)]:
    advs = torch.zeros(BG, LG, dtype=D)
    for b in range(BG):
        n = int(gmask[b].sum())
        last = 0.0
        for t in reversed(range(n)):
            nv = gv[b, t + 1] if t + 1 < n else 0.0
            delta = tr[b, t] + gamma * nv - gv[b, t]
            last = delta + gamma * lam * last
            advs[b, t] = last
    put(f"gae.{tag}.returns", ((advs + gv) * gmask).float())
    put(f"gae.{tag}.adv", masked_whiten(advs, gmask).float())

# --------------------------------------------------------------------------- AdamW
w0 = torch.randn(5, 4).float()
b0 = torch.randn(4).float()
put("adamw.w0", w0)
put("adamw.b0", b0)
pw = torch.nn.Parameter(w0.clone())
pb = torch.nn.Parameter(b0.clone())
opt = torch.optim.AdamW([pw, pb], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
WARM, TOTAL = 2, 10


def lam_fn(step):  # verl / HF cosine with warm-up, min ratio 0
    if step < WARM:
        return step / max(1, WARM)
    prog = (step - WARM) / max(1, TOTAL - WARM)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * prog)))


sched = torch.optim.lr_scheduler.LambdaLR(opt, lam_fn)
norms = []
for step in range(10):
    gw = torch.randn(5, 4) * (0.2 + 0.3 * step)
    gb = torch.randn(4) * (0.2 + 0.3 * step)
    put(f"adamw.gw.{step}", gw)
    put(f"adamw.gb.{step}", gb)
    pw.grad = gw.clone()
    pb.grad = gb.clone()
    norms.append(torch.nn.utils.clip_grad_norm_([pw, pb], 1.0).item())
    opt.step()
    sched.step()
    put(f"adamw.w.{step}", pw.detach())
    put(f"adamw.b.{step}", pb.detach())

os.makedirs(OUT, exist_ok=True)
tensors = {}
for k, t in T.items():
    tensors[k] = t.to(torch.int64) if t.dtype in (torch.int64, torch.int32) else t.to(torch.float32)
save_file(tensors, os.path.join(OUT, "optim_golden.safetensors"))
meta = {
    "B": B, "L": L, "V": V, "L_max": L_MAX, "big_V": VB,
    "cases": CASES, "value_loss": VALUE_LOSS, "value_clip": 0.5,
    "group_size": G, "adv_seq_len": LA,
    "adamw": {"lr": 0.01, "warmup": WARM, "total": TOTAL, "max_norm": 1.0, "grad_norms": norms},
    "torch": torch.__version__,
}
with open(os.path.join(OUT, "optim_golden.json"), "w") as f:
    json.dump(meta, f, indent=1)
print(f"wrote {len(tensors)} tensors, {len(CASES)} loss cases")
