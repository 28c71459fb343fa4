//! Scalar math for kiln's CPU kernels (and the rollout sampler's softmax), written so that
//! loops over slices vectorise.
//!
//! `f32::exp` calls libm's `expf` one value at a time; the polynomial below is branch-free, so
//! the compiler turns a loop of it into AVX-512 code. kiln-optim's loss kernel keeps its own
//! copy of the same formula because that crate depends on burn alone (DESIGN.md).
//!
//! A loop that adds into one running `f32` stays scalar (each add waits for the last, and the
//! compiler may not reorder float adds), so [`sum`] and [`dot`] keep 16 running sums, one per
//! AVX-512 lane, and add them at the end. Element `i` always goes to lane `i % 16`: the result
//! depends only on the slice's contents, not on threads or batching.

/// `exp(x)`, Cephes' polynomial (about 1 ulp). Inputs below -87 give about `exp(-87)` and
/// `-inf` gives 0; above 88 saturates at `exp(88)`.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12582912.0; // 1.5 * 2^23: adding it rounds to the nearest integer
    let below = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let r2 = r * r;
    let mut y = 1.987_569_2e-4f32;
    y = y * r + 1.398_199_9e-3;
    y = y * r + 8.333_452e-3;
    y = y * r + 4.166_579_6e-2;
    y = y * r + 1.666_666_5e-1;
    y = y * r + 0.5;
    let y = y * r2 + r + 1.0;
    let e = y * f32::from_bits(((ni + 127) as u32) << 23);
    if below { 0.0 } else { e }
}

/// The logistic function `1 / (1 + exp(-x))`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `sum_i a_i`, in 16 lanes (module docs).
#[inline(always)]
pub fn sum(a: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    for (lane, x) in lanes.iter_mut().zip(chunks.remainder()) {
        *lane += x;
    }
    for chunk in chunks {
        for l in 0..LANES {
            lanes[l] += chunk[l];
        }
    }
    lanes.iter().sum()
}

/// `sum_i a_i b_i`, in 16 lanes (module docs).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = a_chunks.remainder().iter().zip(b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    for (lane, (x, y)) in lanes.iter_mut().zip(tail) {
        *lane += x * y;
    }
    lanes.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm_within_two_ulps() {
        // Normal results only: below about -80 they lose bits as subnormals.
        let mut worst = 0f32;
        for i in -80_000..=87_990 {
            let x = i as f32 * 1e-3;
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn sum_is_the_sum() {
        for n in [0, 1, 15, 16, 17, 1000] {
            let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 2.5).collect();
            let want: f64 = a.iter().map(|&x| x as f64).sum();
            assert_eq!(sum(&a) as f64, want, "{n}");
        }
    }

    #[test]
    fn dot_is_the_dot_product() {
        for n in [0, 1, 15, 16, 17, 576, 1000] {
            let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.5).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| (x * y) as f64).sum();
            assert_eq!(dot(&a, &b) as f64, want, "{n}");
        }
    }

    #[test]
    fn sigmoid_is_the_logistic_function() {
        for x in [-30.0f32, -3.0, -0.5, 0.0, 0.5, 3.0, 30.0] {
            let want = 1.0 / (1.0 + (-x as f64).exp());
            assert!((sigmoid(x) as f64 - want).abs() < 1e-7, "sigmoid({x})");
        }
    }
}
