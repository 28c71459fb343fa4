//! Dequantization of ggml tensor data to f32, block layouts exactly as in ggml's
//! `ggml-quants.c` (`dequantize_row_*`). Large tensors are split across rayon workers.

use half::{bf16, f16};
use rayon::prelude::*;

use super::ggml_type::GgmlType;

/// Tensors with fewer elements than this are dequantized on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;
/// Blocks handed to one rayon task: big enough to amortise scheduling, small enough to balance.
const BLOCKS_PER_TASK: usize = 512;

/// Block geometry and per-block kernel: (elements per block, bytes per block, kernel).
type Kernel = (usize, usize, fn(&[u8], &mut [f32]));

/// Dequantizes `data` (exactly the tensor's bytes) holding `n` elements of type `ty`.
/// Returns `None` when the type is not supported or `data` does not hold `n` elements.
pub fn dequantize(ty: GgmlType, data: &[u8], n: usize) -> Option<Vec<f32>> {
    let kernel: Kernel = match ty {
        GgmlType::F32 => (1, 4, |b, y| {
            y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }),
        GgmlType::F16 => (1, 2, |b, y| y[0] = f16_at(b, 0)),
        GgmlType::BF16 => (1, 2, |b, y| {
            y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32()
        }),
        GgmlType::Q8_0 => (32, 34, block_q8_0),
        GgmlType::Q4_0 => (32, 18, block_q4_0),
        GgmlType::Q4_1 => (32, 20, block_q4_1),
        GgmlType::Q4_K => (256, 144, block_q4_k),
        GgmlType::Q6_K => (256, 210, block_q6_k),
        _ => return None,
    };
    let (qk, block_bytes, f) = kernel;
    if !n.is_multiple_of(qk) || data.len() != (n / qk) * block_bytes {
        return None;
    }
    let mut out = vec![0f32; n];
    let run = |(ys, bs): (&mut [f32], &[u8])| {
        for (y, b) in ys.chunks_exact_mut(qk).zip(bs.chunks_exact(block_bytes)) {
            f(b, y);
        }
    };
    if n < PARALLEL_MIN_ELEMENTS {
        run((&mut out, data));
    } else {
        // Plain element types get bigger "blocks" per task so tasks stay coarse.
        let per_task = if qk == 1 {
            BLOCKS_PER_TASK * 64
        } else {
            BLOCKS_PER_TASK
        };
        out.par_chunks_mut(qk * per_task)
            .zip(data.par_chunks(block_bytes * per_task))
            .for_each(run);
    }
    Some(out)
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// `block_q8_0`: f16 d, i8 qs[32]; y = d * q.
fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (yi, &q) in y.iter_mut().zip(&b[2..34]) {
        *yi = d * f32::from(q as i8);
    }
}

/// `block_q4_0`: f16 d, u8 qs[16]; low nibbles are elements 0..16, high nibbles 16..32;
/// y = (q - 8) * d.
fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let (lo, hi) = y.split_at_mut(16);
    for (j, &q) in b[2..18].iter().enumerate() {
        lo[j] = (i32::from(q & 0x0F) - 8) as f32 * d;
        hi[j] = (i32::from(q >> 4) - 8) as f32 * d;
    }
}

/// `block_q4_1`: f16 d, f16 m, u8 qs[16]; same nibble order as Q4_0; y = q * d + m.
fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let (lo, hi) = y.split_at_mut(16);
    for (j, &q) in b[4..20].iter().enumerate() {
        lo[j] = f32::from(q & 0x0F) * d + m;
        hi[j] = f32::from(q >> 4) * d + m;
    }
}

/// ggml's `get_scale_min_k4`: 8 six-bit (scale, min) pairs packed in 12 bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// `block_q4_K`: f16 d, f16 dmin, u8 scales[12], u8 qs[128]. Four groups of 64 elements; in
/// each, 32 bytes give the low nibbles (sub-block 2g) then the high nibbles (sub-block 2g+1);
/// y = d * scale * q - dmin * min.
fn block_q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for g in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * g, scales);
        let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let q = &qs[32 * g..32 * g + 32];
        let out = &mut y[64 * g..64 * g + 64];
        for l in 0..32 {
            out[l] = d1 * f32::from(q[l] & 0x0F) - min1;
            out[l + 32] = d2 * f32::from(q[l] >> 4) - min2;
        }
    }
}

/// `block_q6_K`: u8 ql[128] (low 4 bits), u8 qh[64] (high 2 bits), i8 scales[16], f16 d.
/// Two halves of 128 elements; element l + 32k of a half combines nibble/bit-pair k as in ggml;
/// y = d * scale * (q - 32).
fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let out = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            let s = |k: usize| d * f32::from(sc[is + k] as i8);
            out[l] = s(0) * q1 as f32;
            out[l + 32] = s(2) * q2 as f32;
            out[l + 64] = s(4) * q3 as f32;
            out[l + 96] = s(6) * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16b(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn plain_types() {
        let f32s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(
            dequantize(GgmlType::F32, &f32s, 2).unwrap(),
            vec![1.5, -2.0]
        );
        let f16s: Vec<u8> = [0.5f32, -3.25].iter().flat_map(|&x| f16b(x)).collect();
        assert_eq!(
            dequantize(GgmlType::F16, &f16s, 2).unwrap(),
            vec![0.5, -3.25]
        );
        // bf16 is the top half of an f32: 1.0 = 0x3F80, -2.5 = 0xC020.
        let bf16s = [0x80, 0x3F, 0x20, 0xC0];
        assert_eq!(
            dequantize(GgmlType::BF16, &bf16s, 2).unwrap(),
            vec![1.0, -2.5]
        );
    }

    #[test]
    fn q8_0_block() {
        let mut b = f16b(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let y = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        let want: Vec<f32> = (0..32).map(|i| 0.5 * (i as f32 - 16.0)).collect();
        assert_eq!(y, want);
    }

    #[test]
    fn q4_0_block() {
        // Byte j = low nibble j, high nibble 15 - j. d = 2: y[j] = 2(j-8), y[16+j] = 2(7-j).
        let mut b = f16b(2.0).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], 2.0 * (j as f32 - 8.0));
            assert_eq!(y[16 + j], 2.0 * (7.0 - j as f32));
        }
    }

    #[test]
    fn q4_1_block() {
        // d = 0.25, m = -1: y[j] = 0.25 j - 1, y[16+j] = 0.25 (15-j) - 1.
        let mut b = f16b(0.25).to_vec();
        b.extend(f16b(-1.0));
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], 0.25 * j as f32 - 1.0);
            assert_eq!(y[16 + j], 0.25 * (15 - j) as f32 - 1.0);
        }
    }

    #[test]
    fn q4_k_block() {
        // d = 1, dmin = 0.5. Sub-block s (0..8) gets scale s+1 and min 2s; the 6-bit packing:
        // for s < 4 scales[s] = sc, scales[s+4] = min; for s >= 4 the low 4 bits sit in
        // scales[s+4] (scale low nibble, min high nibble) and the top 2 bits in bits 6..8 of
        // scales[s-4] (scale) and scales[s] (min). All values here are < 16, so top bits are 0.
        let mut scales = [0u8; 12];
        for s in 0..4 {
            scales[s] = s as u8 + 1;
            scales[s + 4] = 2 * s as u8;
        }
        for s in 4..8 {
            scales[s + 4] = (s as u8 + 1) | ((2 * s as u8) << 4);
        }
        // qs byte l of group g: low nibble (l % 16), high nibble 15 - (l % 16).
        let mut b = f16b(1.0).to_vec();
        b.extend(f16b(0.5));
        b.extend(scales);
        for _g in 0..4 {
            b.extend((0..32u8).map(|l| (l % 16) | ((15 - l % 16) << 4)));
        }
        let y = dequantize(GgmlType::Q4_K, &b, 256).unwrap();
        for g in 0..4 {
            for l in 0..32 {
                let (s1, s2) = (2 * g, 2 * g + 1);
                let lo = (s1 as f32 + 1.0) * (l % 16) as f32 - 0.5 * (2 * s1) as f32;
                let hi = (s2 as f32 + 1.0) * (15 - l % 16) as f32 - 0.5 * (2 * s2) as f32;
                assert_eq!(y[64 * g + l], lo, "group {g} l {l}");
                assert_eq!(y[64 * g + 32 + l], hi, "group {g} l {l}");
            }
        }
    }

    #[test]
    fn q4_k_scale_top_bits() {
        // Sub-block 4: scale 0b110101 = 53, min 0b100011 = 35. Low nibbles in scales[8]
        // (5 | 3 << 4), top two bits in bits 6..8 of scales[0] (scale: 0b11) and scales[4] (min: 0b10).
        let mut scales = [0u8; 12];
        scales[8] = 0x05 | (0x03 << 4);
        scales[0] = 0b11 << 6;
        scales[4] = 0b10 << 6;
        assert_eq!(scale_min_k4(4, &scales), (53, 35));
        // And sub-block 0 ignores those top bits: scale = scales[0] & 63 = 0, min = scales[4] & 63 = 0.
        assert_eq!(scale_min_k4(0, &scales), (0, 0));
    }

    #[test]
    fn q6_k_block() {
        // d = 0.5; scales[i] = i - 8 (as i8). Choose ql / qh so that element e of the block
        // holds q = e % 64 (6 bits), which is stored as: low 4 bits in a nibble of ql, high 2
        // bits in a bit pair of qh, following ggml's interleaving.
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for half in 0..2 {
            for l in 0..32 {
                for k in 0..4 {
                    let e = 128 * half + l + 32 * k;
                    let q = (e % 64) as u8;
                    let ql_idx = 64 * half + l + if k % 2 == 1 { 32 } else { 0 };
                    let shift = if k >= 2 { 4 } else { 0 };
                    ql[ql_idx] |= (q & 0x0F) << shift;
                    qh[32 * half + l] |= (q >> 4) << (2 * k);
                }
            }
        }
        let mut b = ql.to_vec();
        b.extend(qh);
        b.extend((0..16).map(|i| (i as i8 - 8) as u8));
        b.extend(f16b(0.5));
        let y = dequantize(GgmlType::Q6_K, &b, 256).unwrap();
        for (e, &got) in y.iter().enumerate() {
            // Element e is in half e/128, position l = e % 32, quarter k = (e % 128) / 32;
            // its scale index is 8 * half + l / 16 + 2k.
            let (half, l, k) = (e / 128, e % 32, (e % 128) / 32);
            let scale = (8 * half + l / 16 + 2 * k) as f32 - 8.0;
            let want = 0.5 * scale * ((e % 64) as f32 - 32.0);
            assert_eq!(got, want, "element {e}");
        }
    }

    #[test]
    fn rejects_unsupported_and_mismatched() {
        assert!(dequantize(GgmlType::Q5_K, &[0; 176], 256).is_none());
        assert!(dequantize(GgmlType::Q8_0, &[0; 33], 32).is_none());
        assert!(dequantize(GgmlType::Q8_0, &[0; 34], 31).is_none());
    }

    #[test]
    fn parallel_path_matches_serial() {
        // 4096 Q8_0 blocks (131072 elements) takes the rayon path; compare with per-block.
        let n_blocks = 4096;
        let mut data = Vec::new();
        for i in 0..n_blocks {
            data.extend(f16b((i % 7) as f32 * 0.125));
            data.extend((0..32).map(|j| ((i * 31 + j * 7) % 251) as u8));
        }
        let y = dequantize(GgmlType::Q8_0, &data, n_blocks * 32).unwrap();
        let mut want = vec![0f32; 32];
        for i in 0..n_blocks {
            block_q8_0(&data[34 * i..34 * i + 34], &mut want);
            assert_eq!(&y[32 * i..32 * i + 32], &want[..]);
        }
    }
}
