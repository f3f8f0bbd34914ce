//! Generation's kernels (one weight row against one activation row) in 512-bit registers:
//! two 32-element blocks, or half a K-quant super-block, per instruction. A core that runs
//! 512-bit operations at full width (Intel since Ice Lake, with two FMA ports on Sapphire
//! Rapids) does about twice the work per instruction that the 256-bit kernels get from it;
//! Zen 4 splits each into two 256-bit halves, which is why `Kernels::detect` takes them type
//! by type, by the CPU's make (see `x86::wide_row_types`).
//!
//! What depends on the activation alone is rearranged once per matrix
//! (`Kernels::prepare_rows`), for all the rows it meets: pairs of Q8_0 blocks side by side with
//! their scales already broadcast, and the Q8_K quants of each super-block in the order a
//! 512-bit load of Q4_K nibbles meets them. Each row then needs only its own weights' unpacking.

use super::kernels::{halves, scales_mins_k};
use crate::block::{as_blocks, for_each_row, Block};
use crate::dispatch::{DotRowsFn, PrepareFn, Table};
use crate::q4_0::BlockQ4_0;
use crate::q4_k::BlockQ4K;
use crate::q5_0::BlockQ5_0;
use crate::q6_k::BlockQ6K;
use crate::q8_0::BlockQ8_0;
use crate::q8_k::BlockQ8K;
use crate::types::GgmlType;
use std::arch::x86_64::*;
use std::mem::size_of;

/// The rows kernels of this module over the AVX-512 table.
pub(crate) fn install(table: &mut Table) {
    let kernels: [(GgmlType, DotRowsFn, Option<PrepareFn>); 5] = [
        (GgmlType::Q8_0, dot_rows_q8_0, Some(prepare_q8_0)),
        (GgmlType::Q5_0, dot_rows_q5_0, Some(prepare_q5_0)),
        (GgmlType::Q4_0, dot_rows_q4_0, Some(prepare_q4_0)),
        (GgmlType::Q4_K, dot_rows_q4_k, Some(prepare_q4_k)),
        (GgmlType::Q6_K, dot_rows_q6_k, None),
    ];
    for (ty, dot, prepare) in kernels {
        table.dot_rows[ty as usize] = Some(dot);
        table.prepare_rows[ty as usize] = prepare;
    }
}

/// How far ahead of the block being multiplied the Q4_K kernel asks for the weights, as the
/// 256-bit one does.
const PREFETCH_BYTES: usize = 1024;

/// Bytes per pair of Q8_0 activation blocks as `pair_q8_0` lays them out: the two blocks'
/// quants side by side; their scales, block `2p`'s in lanes 0-7 and `2p + 1`'s in lanes 8-15;
/// and the start of each block's sum, `−offset·Σa`, in lanes 0 and 8 (the weights' unsigned
/// quants stand for `q − offset`, and this is that offset's share). An odd last block is
/// paired with nothing: zero quants and scale.
const PAIR_BYTES: usize = 3 * 64;

#[inline(always)]
fn pair_q8_0(act: &[u8], offset: i32) -> Vec<u8> {
    let act = as_blocks::<BlockQ8_0>(act);
    let mut paired = Vec::with_capacity(act.len().div_ceil(2) * PAIR_BYTES);
    for pair in act.chunks(2) {
        let mut quants = [0i8; 64];
        let mut scales = [0.0f32; 16];
        let mut starts = [0i32; 16];
        for (half, a) in pair.iter().enumerate() {
            quants[32 * half..32 * half + 32].copy_from_slice(&a.qs);
            scales[8 * half..8 * half + 8].fill(a.d());
            starts[8 * half] = -offset * super::quant_sum(a);
        }
        paired.extend(quants.iter().map(|&q| q as u8));
        paired.extend(scales.iter().flat_map(|s| s.to_le_bytes()));
        paired.extend(starts.iter().flat_map(|s| s.to_le_bytes()));
    }
    paired
}

unsafe fn prepare_q8_0(act: &[u8]) -> Vec<u8> {
    pair_q8_0(act, 128)
}

unsafe fn prepare_q5_0(act: &[u8]) -> Vec<u8> {
    pair_q8_0(act, 16)
}

unsafe fn prepare_q4_0(act: &[u8]) -> Vec<u8> {
    pair_q8_0(act, 8)
}

/// Two f16 scales, block `a`'s in lanes 0-7 and `b`'s in lanes 8-15.
#[inline(always)]
unsafe fn scale_pair(a: [u8; 2], b: [u8; 2]) -> __m512 {
    let bits = u16::from_le_bytes(a) as u32 | (u16::from_le_bytes(b) as u32) << 16;
    let both = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    let index = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    _mm512_permutexvar_ps(index, _mm512_castps128_ps512(both))
}

/// The 64 unsigned quants of two blocks of a 32-element format in element order, block `a`'s
/// in the low 256 bits, and their scales as `scale_pair` gives them.
type QuantsPair<W> = unsafe fn(a: &W, b: &W) -> (__m512i, __m512);

/// Q8_0's signed quants as unsigned `q + 128`.
#[inline(always)]
unsafe fn quants_q8_0(a: &BlockQ8_0, b: &BlockQ8_0) -> (__m512i, __m512) {
    let low = _mm256_loadu_si256(a.qs.as_ptr().cast());
    let high = _mm256_loadu_si256(b.qs.as_ptr().cast());
    let q = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high);
    (
        _mm512_xor_si512(q, _mm512_set1_epi8(i8::MIN)),
        scale_pair(a.d, b.d),
    )
}

/// The nibbles of two 16-byte Q4_0/Q5_0 quant arrays in element order: low nibbles of `a`,
/// high nibbles of `a`, then `b`'s.
#[inline(always)]
unsafe fn nibble_pair(a: &[u8; 16], b: &[u8; 16]) -> __m512i {
    let both = _mm256_set_m128i(
        _mm_loadu_si128(b.as_ptr().cast()),
        _mm_loadu_si128(a.as_ptr().cast()),
    );
    let lanes = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(both), _mm256_srli_epi16::<4>(both));
    // [a, b, a >> 4, b >> 4] into [a, a >> 4, b, b >> 4].
    let ordered = _mm512_shuffle_i64x2::<0b11_01_10_00>(lanes, lanes);
    _mm512_and_si512(ordered, _mm512_set1_epi8(0x0F))
}

/// Q4_0's quants as unsigned `q + 8`.
#[inline(always)]
unsafe fn quants_q4_0(a: &BlockQ4_0, b: &BlockQ4_0) -> (__m512i, __m512) {
    (nibble_pair(&a.qs, &b.qs), scale_pair(a.d, b.d))
}

/// Q5_0's quants as unsigned `q + 16`: the fifth bits of both blocks, in element order, are
/// one 64-bit mask for a masked add.
#[inline(always)]
unsafe fn quants_q5_0(a: &BlockQ5_0, b: &BlockQ5_0) -> (__m512i, __m512) {
    let q = nibble_pair(&a.qs, &b.qs);
    let fifth = u32::from_le_bytes(a.qh) as u64 | (u32::from_le_bytes(b.qh) as u64) << 32;
    (
        _mm512_mask_add_epi8(q, fifth, q, _mm512_set1_epi8(16)),
        scale_pair(a.d, b.d),
    )
}

/// Rows of a 32-element format against Q8_0 activations paired by `pair_q8_0`, a pair of
/// blocks per step. Two accumulators take alternate pairs, so each pair does not wait on the
/// previous one's FMA.
#[inline(always)]
unsafe fn rows_by_pairs<W: Block>(
    rows: &[u8],
    paired: &[u8],
    out: &mut [f32],
    quants: QuantsPair<W>,
) {
    let pair_at = |p: usize| paired.as_ptr().add(p * PAIR_BYTES);
    let step = |acc: __m512, p: usize, (q, weight_scales): (__m512i, __m512)| {
        let at = pair_at(p);
        let start = _mm512_loadu_si512(at.add(128).cast());
        let sum = _mm512_dpbusd_epi32(start, q, _mm512_loadu_si512(at.cast()));
        let scale = _mm512_mul_ps(weight_scales, _mm512_loadu_ps(at.add(64).cast()));
        _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sum), acc)
    };
    weight_rows(rows, out, |x: &[W]| {
        let full_pairs = x.len() / 2;
        let mut acc = [_mm512_setzero_ps(); 2];
        for p in 0..full_pairs {
            let pair = quants(x.get_unchecked(2 * p), x.get_unchecked(2 * p + 1));
            acc[p % 2] = step(acc[p % 2], p, pair);
        }
        if x.len() % 2 == 1 {
            let last = x.get_unchecked(x.len() - 1);
            let (q, scales) = quants(last, last);
            let alone = (
                _mm512_maskz_mov_epi64(0x0F, q),
                _mm512_maskz_mov_ps(0x00FF, scales),
            );
            acc[0] = step(acc[0], full_pairs, alone);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
    });
}

/// `out[r] = dot(row r)` over the `out.len()` equal rows in `rows`, for kernels whose
/// activation is not a row of blocks (`block::for_each_row` for those that are).
#[inline(always)]
fn weight_rows<W: Block>(rows: &[u8], out: &mut [f32], mut dot: impl FnMut(&[W]) -> f32) {
    if out.is_empty() {
        return;
    }
    let row_bytes = rows.len() / out.len();
    if row_bytes == 0 {
        out.fill(0.0);
        return;
    }
    for (row, o) in rows.chunks_exact(row_bytes).zip(out.iter_mut()) {
        *o = dot(as_blocks::<W>(row));
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_rows_q8_0(rows: &[u8], act: &[u8], out: &mut [f32]) {
    rows_by_pairs::<BlockQ8_0>(rows, act, out, quants_q8_0);
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_rows_q5_0(rows: &[u8], act: &[u8], out: &mut [f32]) {
    rows_by_pairs::<BlockQ5_0>(rows, act, out, quants_q5_0);
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_rows_q4_0(rows: &[u8], act: &[u8], out: &mut [f32]) {
    rows_by_pairs::<BlockQ4_0>(rows, act, out, quants_q4_0);
}

/// A Q8_K activation block as the 512-bit Q4_K kernel reads it.
#[repr(C)]
struct ReadyQ8K {
    /// In the order of a 512-bit load's low nibbles then its high nibbles: elements 0-31,
    /// 64-95, 32-63, 96-127, then the same for 128-255.
    quants: [i8; 256],
    d: f32,
    /// The sums of the eight 32-element groups.
    sums: [i16; 8],
}

/// Where the 32-element groups of a Q8_K block go in `ReadyQ8K`.
const Q4_K_GROUP_ORDER: [usize; 8] = [0, 2, 1, 3, 4, 6, 5, 7];

unsafe fn prepare_q4_k(act: &[u8]) -> Vec<u8> {
    let act = as_blocks::<BlockQ8K>(act);
    let mut ready = Vec::with_capacity(act.len() * size_of::<ReadyQ8K>());
    for a in act {
        let mut block = ReadyQ8K {
            quants: [0; 256],
            d: a.d(),
            sums: std::array::from_fn(|i| a.bsum(2 * i) + a.bsum(2 * i + 1)),
        };
        for (to, &from) in Q4_K_GROUP_ORDER.iter().enumerate() {
            block.quants[32 * to..32 * to + 32].copy_from_slice(&a.qs[32 * from..32 * from + 32]);
        }
        // SAFETY: `ReadyQ8K` is plain data without padding (256 + 4 + 16 bytes, align 4).
        ready.extend_from_slice(std::slice::from_raw_parts(
            (&block as *const ReadyQ8K).cast::<u8>(),
            size_of::<ReadyQ8K>(),
        ));
    }
    ready
}

/// A byte shuffle that puts i16 word `low` of each 128-bit lane into every word of lanes 0
/// and 1, and word `high` into lanes 2 and 3.
#[inline(always)]
unsafe fn pick_words(low: i16, high: i16) -> __m512i {
    let word = |w: i16| _mm_set1_epi16(((2 * w + 1) << 8) | (2 * w));
    let low = _mm256_broadcastsi128_si256(word(low));
    let high = _mm256_broadcastsi128_si256(word(high));
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_rows_q4_k(rows: &[u8], act: &[u8], out: &mut [f32]) {
    let ready = act.as_ptr().cast::<ReadyQ8K>();
    let m4 = _mm512_set1_epi8(0x0F);
    // Half h's low nibbles are groups 4h and 4h + 2, its high nibbles 4h + 1 and 4h + 3.
    let picks = [
        [pick_words(0, 2), pick_words(1, 3)],
        [pick_words(4, 6), pick_words(5, 7)],
    ];
    weight_rows(rows, out, |x: &[BlockQ4K]| {
        let mut acc = _mm512_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        for (b, xb) in x.iter().enumerate() {
            // SAFETY: `prepare_q4_k` made one `ReadyQ8K` per block, here read field by field
            // without a reference, as a byte vector promises no alignment.
            let yb = ready.add(b);
            let yd = std::ptr::addr_of!((*yb).d).read_unaligned();
            _mm_prefetch::<_MM_HINT_T0>((xb as *const BlockQ4K).cast::<i8>().add(PREFETCH_BYTES));
            let (xd, xdmin) = halves(xb.d, xb.dmin);
            let d = xd * yd;
            let dmin = -xdmin * yd;
            let (scales, mins) = scales_mins_k(&xb.scales);
            let group_sums = _mm_loadu_si128(std::ptr::addr_of!((*yb).sums).cast());
            let min_prod = _mm_madd_epi16(mins, group_sums);
            acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(min_prod), acc_m);

            let scales = _mm512_broadcast_i32x4(scales);
            let mut sum = _mm512_setzero_si512();
            for (h, [pick_low, pick_high]) in picks.iter().enumerate() {
                let q = _mm512_loadu_si512(xb.qs.as_ptr().add(64 * h).cast());
                let low = _mm512_and_si512(q, m4);
                let high = _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4);
                let a = std::ptr::addr_of!((*yb).quants).cast::<i8>().add(128 * h);
                let p_low = _mm512_maddubs_epi16(low, _mm512_loadu_si512(a.cast()));
                let p_high = _mm512_maddubs_epi16(high, _mm512_loadu_si512(a.add(64).cast()));
                sum = _mm512_dpwssd_epi32(sum, p_low, _mm512_shuffle_epi8(scales, *pick_low));
                sum = _mm512_dpwssd_epi32(sum, p_high, _mm512_shuffle_epi8(scales, *pick_high));
            }
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sum), acc);
        }
        let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
        _mm512_reduce_add_ps(acc) + _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)))
    });
}

/// Multiplies the unsigned 6-bit quants (0..63) and subtracts 32·Σ sc·bsum once per block
/// instead of re-centring every quant, as the 256-bit kernel does.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_rows_q6_k(rows: &[u8], act: &[u8], out: &mut [f32]) {
    let m4 = _mm512_set1_epi8(0x0F);
    let m2 = _mm512_set1_epi8(0x30);
    // A 64-byte load of `ql` is two 32-byte runs that take their top bits from the same 32
    // bytes of `qh` at different shifts: runs 0 and 1 from bits 0-1 and 2-3, runs 2 and 3 (the
    // high nibbles) from bits 4-5 and 6-7.
    let per_run = |first: i16, second: i16| {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_set1_epi16(first)),
            _mm256_set1_epi16(second),
        )
    };
    let low_shifts = per_run(4, 2);
    let high_shifts = per_run(0, 2);
    // Each 128-bit lane of a product is one 16-element sub-block: word w of `picks[j]` is the
    // index of sub-block 4j + w / 8.
    let picks: [__m512i; 4] = std::array::from_fn(|j| {
        let words: [i16; 32] = std::array::from_fn(|w| (4 * j + w / 8) as i16);
        _mm512_loadu_si512(words.as_ptr().cast())
    });
    for_each_row(rows, act, out, |x: &[BlockQ6K], y: &[BlockQ8K]| {
        let mut acc = _mm512_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let d = halves(xb.d, xb.d).0 * yb.d();
            let scales8 = _mm_loadu_si128(xb.scales.as_ptr().cast());
            let scales = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(scales8));
            let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(
                _mm512_castsi512_si256(scales),
                _mm256_loadu_si256(yb.bsums.as_ptr().cast()),
            ));
            let mut sum = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(offset));
            for h in 0..2 {
                let ql = _mm512_loadu_si512(xb.ql.as_ptr().add(64 * h).cast());
                let qh =
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(xb.qh.as_ptr().add(32 * h).cast()));
                let low = _mm512_or_si512(
                    _mm512_and_si512(ql, m4),
                    _mm512_and_si512(_mm512_sllv_epi16(qh, low_shifts), m2),
                );
                let high = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                    _mm512_and_si512(_mm512_srlv_epi16(qh, high_shifts), m2),
                );
                let a = yb.qs.as_ptr().add(128 * h);
                let p_low = _mm512_maddubs_epi16(low, _mm512_loadu_si512(a.cast()));
                let p_high = _mm512_maddubs_epi16(high, _mm512_loadu_si512(a.add(64).cast()));
                let s_low = _mm512_permutexvar_epi16(picks[2 * h], scales);
                let s_high = _mm512_permutexvar_epi16(picks[2 * h + 1], scales);
                sum = _mm512_dpwssd_epi32(sum, p_low, s_low);
                sum = _mm512_dpwssd_epi32(sum, p_high, s_high);
            }
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sum), acc);
        }
        _mm512_reduce_add_ps(acc)
    });
}
