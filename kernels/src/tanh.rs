//! Gemma's soft cap, `cap · tanh(x / cap)`, on attention scores and logits.
//!
//! Libm's `tanhf` per element cost Gemma 2 a few percent of every token, and its attention
//! scores' share grows with the context (42 layers × 16 heads × the positions for the 9B). Here
//! tanh is a polynomial near 0 and `(1 − e^−2|x|) / (1 + e^−2|x|)` beyond, with the exponential
//! of softmax (`exp::exp_nonpositive`), which SIMD takes eight or sixteen at a time. Every ISA
//! computes the same operations in the same order and agrees with this one bit for bit.

use crate::exp::exp_nonpositive;

/// Below this |x| the polynomial: there `1 − e^−2|x|` would lose bits to cancellation.
pub(crate) const SMALL: f32 = 0.625;

/// tanh's Taylor series `x + x³·P(x²)` through x²¹, P's coefficients highest power first
/// (−1/3, 2/15, −17/315, 62/2835, −1382/155925, 21844/6081075, −929569/638512875,
/// 6404582/10854718875, −443861162/1856156927625, 18888466084/194896477400625). At
/// |x| < 0.625 the next term is below a tenth of an ulp of tanh x.
pub(crate) const TAYLOR: [f32; 10] = [
    (18888466084.0_f64 / 194896477400625.0) as f32,
    (-443861162.0_f64 / 1856156927625.0) as f32,
    (6404582.0_f64 / 10854718875.0) as f32,
    (-929569.0_f64 / 638512875.0) as f32,
    (21844.0_f64 / 6081075.0) as f32,
    (-1382.0_f64 / 155925.0) as f32,
    (62.0_f64 / 2835.0) as f32,
    (-17.0_f64 / 315.0) as f32,
    (2.0_f64 / 15.0) as f32,
    (-1.0_f64 / 3.0) as f32,
];

/// tanh x within 2 ulp (NaN stays NaN, ±∞ gives ±1).
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let magnitude = if a < SMALL {
        let u = a * a;
        let p = TAYLOR[1..].iter().fold(TAYLOR[0], |p, &c| p.mul_add(u, c));
        (a * u).mul_add(p, a)
    } else {
        let t = exp_nonpositive(-2.0 * a);
        (1.0 - t) / (1.0 + t)
    };
    magnitude.copysign(x)
}

/// `x[i] = cap · tanh(x[i] / cap)`.
pub(crate) fn soft_cap(x: &mut [f32], cap: f32) {
    for v in x {
        *v = cap * tanh(*v / cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The distance in units in the last place between two finite f32s of one sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn tanh_is_within_two_ulp_of_the_exact_value() {
        let mut worst = (0, 0.0f32);
        // Every 97th float from 2^-30 to 20 (where tanh rounds to 1), both signs, and the
        // floats on both sides of the switch to the exponential.
        let sweep = (0x3080_0000u32..0x41a0_0000)
            .step_by(97)
            .map(f32::from_bits);
        let edge = (-4..4).map(|d| f32::from_bits((SMALL.to_bits() as i32 + d) as u32));
        for x in sweep.chain(edge) {
            for x in [x, -x] {
                let exact = (x as f64).tanh() as f32;
                let d = ulps(tanh(x), exact);
                if d > worst.0 {
                    worst = (d, x);
                }
            }
        }
        assert!(worst.0 <= 2, "{} ulp at {}", worst.0, worst.1);
    }

    #[test]
    fn tanh_keeps_signs_limits_and_nan() {
        assert_eq!(tanh(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh(1e-30), 1e-30);
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanh(1e30), 1.0);
        assert!(tanh(f32::NAN).is_nan());
    }
}
