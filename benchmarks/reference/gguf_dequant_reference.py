"""Writes the reference fixture kiln's GGUF reader is tested against
(crates/kiln-model/tests/fixtures/smollm2_gguf_reference.json):

- synthetic_blocks: pseudo-random blocks of every quant type kiln dequantizes (F16, BF16, Q8_0,
  Q4_0, Q4_1, Q4_K, Q6_K), dequantized by gguf-py (llama.cpp's Python package, numpy);
- tensors: slices (first 64 / last 16 values, sum, abs sum) of real SmolLM2 tensors of each type
  in the file, dequantized by gguf-py (GGUF order, no permutation undone);
- transformers: layer-0 q_proj / k_proj as transformers' GGUF loader produces them (it undoes
  llama.cpp's rotary permutation): the first 8 values of each row of the first head, and
  sum_r r * sum_c w[r, c] over the whole matrix.

    python benchmarks/reference/gguf_dequant_reference.py \
        --gguf ../shared/models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --out crates/kiln-model/tests/fixtures/smollm2_gguf_reference.json
"""

import argparse
import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader
from gguf.quants import dequantize

# (type, elements per block, bytes per block, byte offsets of f16 scale fields)
SYNTHETIC = [
    (Q.Q8_0, 32, 34, [0]),
    (Q.Q4_0, 32, 18, [0]),
    (Q.Q4_1, 32, 20, [0, 2]),
    (Q.Q4_K, 256, 144, [0, 2]),
    (Q.Q6_K, 256, 210, [208]),
]
TENSORS = [
    "token_embd.weight",
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.29.ffn_down.weight",
    "blk.0.attn_norm.weight",
    "output_norm.weight",
]


def f32s(values):
    """Nine significant digits round-trip an f32."""
    return [float(f"{float(v):.9g}") for v in np.asarray(values, dtype=np.float32).ravel()]


def synthetic_blocks(rng):
    cases = []
    for qtype, _qk, block_bytes, scale_offsets in SYNTHETIC:
        n_blocks = 2
        raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
        for b in range(n_blocks):
            for off in scale_offsets:
                # A finite, moderate scale (the random bytes could encode inf / NaN).
                scale = np.float16(rng.uniform(-0.05, 0.05))
                raw[b, off : off + 2] = np.frombuffer(scale.tobytes(), dtype=np.uint8)
        values = dequantize(raw, qtype)
        cases.append({"ggml_type": int(qtype), "name": qtype.name, "bytes_hex": raw.tobytes().hex(), "values": f32s(values)})
    halfs = rng.uniform(-4, 4, size=16).astype(np.float16)
    cases.append({"ggml_type": int(Q.F16), "name": "F16", "bytes_hex": halfs.tobytes().hex(), "values": f32s(halfs)})
    bf = rng.uniform(-4, 4, size=16).astype(np.float32).view(np.uint32) >> 16
    bf = bf.astype(np.uint16)
    bf_values = dequantize(bf.view(np.uint8).reshape(16, 2), Q.BF16)
    cases.append({"ggml_type": int(Q.BF16), "name": "BF16", "bytes_hex": bf.tobytes().hex(), "values": f32s(bf_values)})
    return cases


def real_tensors(path):
    reader = GGUFReader(path)
    by_name = {t.name: t for t in reader.tensors}
    out = {}
    for name in TENSORS:
        t = by_name[name]
        values = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape)]
        values = values.reshape(shape)
        flat = values.ravel().astype(np.float64)
        out[name] = {
            "ggml_type": t.tensor_type.name,
            "shape": shape,
            "first": f32s(flat[:64]),
            "last": f32s(flat[-16:]),
            "sum": float(flat.sum()),
            "abs_sum": float(np.abs(flat).sum()),
        }
    return out


def transformers_qk(path):
    import torch
    from transformers import AutoModelForCausalLM

    p = Path(path)
    model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32)
    attn = model.model.layers[0].self_attn
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    out = {}
    for hf, w in [
        ("model.layers.0.self_attn.q_proj.weight", attn.q_proj.weight),
        ("model.layers.0.self_attn.k_proj.weight", attn.k_proj.weight),
    ]:
        w = w.detach().double().numpy()
        out[hf] = {
            "shape": list(w.shape),
            "rows_first8": [f32s(row[:8]) for row in w[:head_dim]],
            "row_weighted_sum": float((np.arange(w.shape[0]) * w.sum(axis=1)).sum()),
        }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--skip-transformers", action="store_true")
    args = ap.parse_args()
    fixture = {
        "source": "benchmarks/reference/gguf_dequant_reference.py",
        "gguf": Path(args.gguf).name,
        "synthetic_blocks": synthetic_blocks(np.random.default_rng(1234)),
        "tensors": real_tensors(args.gguf),
        "transformers": {} if args.skip_transformers else transformers_qk(args.gguf),
    }
    Path(args.out).write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
