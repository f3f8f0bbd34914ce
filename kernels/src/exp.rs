//! The exponentials of softmax, computed as llama.cpp's CPU backend computes them on AVX-512.
//!
//! ggml's `ggml_vec_soft_max_f32` takes e^(x − max) sixteen elements at a time with a
//! polynomial (`ggml_v_expf`, Arm's optimized-routines expf: within 1.5 ulp), sums each sixteen
//! in f32 and adds that to an f64 total, and takes the last `len % 16` with libm's `expf`. Every
//! ISA here computes the same values in the same order, so attention weights match llama.cpp's
//! on the machines we compare with, and each SIMD variant matches this one bit for bit.

/// Elements whose exponentials are summed in f32 before joining the f64 total.
pub(crate) const GROUP: usize = 16;

/// 1.5 · 2^23: adding it to a float of magnitude below 2^22 rounds that to an integer.
pub(crate) const SHIFTER: f32 = f32::from_bits(0x4b40_0000);
pub(crate) const LOG2_E: f32 = f32::from_bits(0x3fb8_aa3b);
/// ln 2 in two parts: `LN2_HIGH` has trailing zero bits, so n · `LN2_HIGH` is exact.
pub(crate) const LN2_HIGH: f32 = f32::from_bits(0x3f31_7200);
pub(crate) const LN2_LOW: f32 = f32::from_bits(0x35bf_be8e);
/// The polynomial for e^b on |b| ≤ ln 2 / 2, highest power first (the constant term is 1).
pub(crate) const P5: f32 = f32::from_bits(0x3c07_2010);
pub(crate) const P4: f32 = f32::from_bits(0x3d2b_9f17);
pub(crate) const P3: f32 = f32::from_bits(0x3e2a_af33);
pub(crate) const P2: f32 = f32::from_bits(0x3eff_fedb);
pub(crate) const P1: f32 = f32::from_bits(0x3f7f_fff6);
/// Below 2^-192 ggml's result is 0.
pub(crate) const LOWEST_POWER: f32 = -192.0;
/// The power of two is applied in two steps, 2^(n + `SPLIT`) and then 2^−`SPLIT`, so that the
/// first is exact and the second rounds once, as AVX-512's `vscalefps` does: both factors are
/// normal floats for every n in [−192, 0].
pub(crate) const SPLIT: i32 = 100;

/// 2^e for an integer e whose power is a normal float.
#[inline(always)]
fn power_of_two(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

/// e^x for x ≤ 0, as `ggml_v_expf` computes it (NaN stays NaN, −∞ gives 0).
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    let n = x.mul_add(LOG2_E, SHIFTER) - SHIFTER;
    let b = (-n).mul_add(LN2_LOW, (-n).mul_add(LN2_HIGH, x));
    let u = b * b;
    let j = P5
        .mul_add(b, P4)
        .mul_add(u, P3.mul_add(b, P2))
        .mul_add(u, P1.mul_add(b, 1.0));
    if n < LOWEST_POWER {
        return 0.0;
    }
    j * power_of_two(n as i32 + SPLIT) * power_of_two(-SPLIT)
}

/// The f32 sum of sixteen values in `_mm512_reduce_add_ps`'s order: halves, then quarters,
/// then pairs.
#[inline(always)]
fn tree_sum(g: &[f32]) -> f32 {
    let mut s: [f32; 8] = std::array::from_fn(|i| g[i] + g[i + 8]);
    for i in 0..4 {
        s[i] += s[i + 4];
    }
    (s[0] + s[2]) + (s[1] + s[3])
}

/// Replaces each `x[i]` by e^(x[i] − max), `max` being at least every element, and returns
/// their sum.
pub(crate) fn softmax_exponentials(x: &mut [f32], max: f32) -> f64 {
    let mut sum = 0f64;
    let mut groups = x.chunks_exact_mut(GROUP);
    for group in &mut groups {
        for v in group.iter_mut() {
            *v = exp_nonpositive(*v - max);
        }
        sum += f64::from(tree_sum(group));
    }
    for v in groups.into_remainder() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within 2 ulp of e^x over the range where the result is a normal float (ggml's bound:
    /// 1.45 ulp plus the final rounding), and within one subnormal step below it.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut x = 0.0f32;
        while x > -110.0 {
            let got = exp_nonpositive(x);
            let want = (x as f64).exp();
            let ulp = if want >= f32::MIN_POSITIVE as f64 {
                f64::from(f32::EPSILON) * want
            } else {
                f64::from(f32::from_bits(1))
            };
            assert!(
                (got as f64 - want).abs() <= 2.0 * ulp,
                "e^{x}: {got} vs {want}"
            );
            x -= 0.000_731;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-140.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    #[test]
    fn groups_of_sixteen_then_libm_for_the_tail() {
        let mut x: Vec<f32> = (0..37).map(|i| -(i as f32) * 0.37).collect();
        let sum = softmax_exponentials(&mut x, 0.0);
        for (i, v) in x.iter().enumerate() {
            let at = -(i as f32) * 0.37;
            let want = if i < 32 {
                exp_nonpositive(at)
            } else {
                at.exp()
            };
            assert_eq!(v.to_bits(), want.to_bits(), "element {i}");
        }
        let grouped = f64::from(tree_sum(&x[..16])) + f64::from(tree_sum(&x[16..32]));
        let total = x[32..].iter().fold(grouped, |s, &v| s + f64::from(v));
        assert_eq!(sum, total);
    }
}
