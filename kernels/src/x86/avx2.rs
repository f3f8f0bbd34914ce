//! AVX2 + FMA + F16C kernels.

use super::kernels::{entry_points, IsaPrimitives};
use std::arch::x86_64::*;

/// AVX2 with FMA and F16C, which every AVX2 CPU in practice has.
pub(crate) struct Avx2;

// Four activation rows per eight-row tile: with eight transposed quant registers, four
// accumulators are what the 16 vector registers hold without spilling. Three queries per
// key: their four accumulators each and the converted key fill the 16 registers.
entry_points!("avx2,fma,f16c", Avx2, row_lane_acts: 4, attention_queries: 3);

impl IsaPrimitives for Avx2 {
    /// `vpmaddubsw` saturates each pair of byte products at 16 bits: unsigned bytes above
    /// 128 times activations near ±127 would clip.
    const UNSATURATED_BYTE_PRODUCTS: bool = false;

    /// Zen 3 (dot_rows bench, 2304 columns, from DRAM, one thread, medians of four): grouped
    /// Q4_K 11.0 -> 14.9 GB/s, Q4_0 11.3 -> 13.0, Q5_0 8.4 -> 10.7, Q6_K 10.7 -> 12.3; by rows
    /// (mapped weights, medians of six) Q4_K 9.9 -> 12.5 (against one line 1 KiB ahead), Q6_K
    /// 8.8 -> 12.6, and with fewer runs Q8_0 10.4 -> 13.7, Q5_K 10.5 -> 13.9, Q4_1 9.3 ->
    /// 10.5, Q3_K 7.2 -> 8.0, Q5_0 and Q2_K unchanged (their arithmetic holds them). One block
    /// or 1 KiB ahead did less, 8 KiB less still, 3 KiB no better but for Q6_K's rows (14.4),
    /// hints other than T0 no better. Without it these kernels read memory at 50-65% of the
    /// bandwidth a plain read loop gets there, though they run twice as fast from L2: the
    /// hardware's prefetcher does not stay far enough ahead of them.
    const PREFETCH_SPAN_BYTES: usize = 2048;

    #[inline(always)]
    unsafe fn dot_u8_i8(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_add_epi32(
            acc,
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)),
        )
    }

    #[inline(always)]
    unsafe fn madd_acc(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
    }

    #[inline(always)]
    unsafe fn add_16_where_set(q: __m256i, bits: [u8; 4]) -> __m256i {
        _mm256_or_si256(
            q,
            _mm256_and_si256(bytes_from_bits(bits), _mm256_set1_epi8(16)),
        )
    }

    /// Each word holds two products of at most `max_quant · 128`.
    #[inline(always)]
    fn run_len(max_quant: i32) -> usize {
        (i16::MAX as i32 / (2 * 128 * max_quant)).max(1) as usize
    }

    #[inline(always)]
    unsafe fn add_run_products(run: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_add_epi16(run, _mm256_maddubs_epi16(u, s))
    }

    /// The words of each lane, widened, times the scale in both words of the lane.
    #[inline(always)]
    unsafe fn add_scaled_run(acc: __m256i, run: __m256i, scale: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(run, scale))
    }

    /// The scale's low word in both words of its lane.
    #[inline(always)]
    unsafe fn run_scale(scale: __m256i) -> __m256i {
        _mm256_blend_epi16::<0b1010_1010>(scale, _mm256_slli_epi32::<16>(scale))
    }
}

/// Byte j is 0xFF where bit j of the little-endian `bits` is set.
#[inline(always)]
unsafe fn bytes_from_bits(bits: [u8; 4]) -> __m256i {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(i32::from_le_bytes(bits)),
        _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0,
        ),
    );
    let others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1))
}
