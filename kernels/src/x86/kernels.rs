//! The x86 kernel bodies, written once for every x86 ISA.
//!
//! Every body here is `#[inline(always)]` and generic over `IsaPrimitives`, the few integer
//! operations in which AVX2 and AVX-512 VNNI differ. Only the entry points that go into the
//! dispatch table carry `#[target_feature]`: `entry_points!` stamps them for one ISA, and the
//! bodies they call are compiled inside them, with their features (llamafile's tinyBLAS
//! compiles one body per ISA the same way).

use crate::bf16::Bf16;
use crate::block::{as_blocks, as_blocks_mut, f32_to_f16, for_each_row, Block, GROUP_ROWS};
use crate::f16::F16;
use crate::f32::F32;
use crate::q2_k::BlockQ2K;
use crate::q3_k::BlockQ3K;
use crate::q4_0::{BlockQ4_0, BlockQ4_0Group};
use crate::q4_1::{BlockQ4_1, BlockQ4_1Group};
use crate::q4_k::{BlockQ4K, BlockQ4KGroup, KQuantGroupHead};
use crate::q5_0::{BlockQ5_0, BlockQ5_0Group};
use crate::q5_1::{BlockQ5_1, BlockQ5_1Group};
use crate::q5_k::{BlockQ5K, BlockQ5KGroup};
use crate::q6_k::{BlockQ6K, BlockQ6KGroup};
use crate::q8_0::{scales, BlockQ8_0, BlockQ8_0Group};
use crate::q8_1::BlockQ8_1;
use crate::q8_k::BlockQ8K;
use crate::x86::ReadyQ8_0;
use std::arch::x86_64::*;
use std::borrow::Cow;

/// The integer operations in which the x86 ISAs differ. Implementations are
/// `#[inline(always)]` and are only called from inside an entry point that enables their ISA.
pub(crate) trait IsaPrimitives {
    /// How far ahead of the block being multiplied the generation kernels (grouped and by
    /// rows) ask for that block's span of weights, in bytes. 0 leaves it to the hardware's
    /// prefetcher, but for one line 1 KiB ahead per Q4_K row block (`PREFETCH_BYTES`). A
    /// property of the CPUs each variant was measured on rather than of the ISA.
    const PREFETCH_SPAN_BYTES: usize;

    /// Whether `dot_u8_i8` sums its byte products without saturating on the way (VNNI) or
    /// saturates each pair at 16 bits (AVX2's `vpmaddubsw`, where unsigned bytes above 128
    /// times activations near ±127 would clip).
    const UNSATURATED_BYTE_PRODUCTS: bool;

    /// Adds to each i32 lane of `acc` the sum of the four products of unsigned bytes `u` and
    /// signed bytes `s` in that lane (exact for |u| ≤ 128, |s| ≤ 127 on every ISA).
    unsafe fn dot_u8_i8(acc: __m256i, u: __m256i, s: __m256i) -> __m256i;

    /// Adds to each i32 lane of `acc` the two products of its i16 pairs.
    unsafe fn madd_acc(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;

    /// Adds 16 to byte j of `q` where bit j of the little-endian `bits` is set (Q5_0's and
    /// Q5_K's fifth bit).
    unsafe fn add_16_where_set(q: __m256i, bits: [u8; 4]) -> __m256i;

    /// How many `add_run_products` of unsigned quants up to `max_quant` (against signed bytes)
    /// one run's sums can take before they could overflow.
    fn run_len(max_quant: i32) -> usize;

    /// Adds the products of unsigned bytes `u` and signed bytes `s` to a run's sums, which
    /// start at zero: into each i32 lane (VNNI) or, AVX2 having no four-byte product, into
    /// each i16 word (`vpmaddubsw` and an add, where the widening to i32 would be two more
    /// instructions on the ports the products need).
    unsafe fn add_run_products(run: __m256i, u: __m256i, s: __m256i) -> __m256i;

    /// `acc` plus each i32 lane's run sums times its scale, as `run_scale` gave it.
    unsafe fn add_scaled_run(acc: __m256i, run: __m256i, scale: __m256i) -> __m256i;

    /// A scale per i32 lane (|scale| < 2¹⁵) as `add_scaled_run` takes it.
    unsafe fn run_scale(scale: __m256i) -> __m256i;
}

/// The `#[target_feature]` entry points of one ISA, named as the bodies they call, two generic
/// ones (`dot_tile`, `dot_groups`) that `install` stamps once per weight format, and
/// `install`, which puts them into the dispatch table. `row_lane_acts` is the number of
/// activations an eight-row rows-in-lanes tile takes and `attention_queries` the number of
/// queries that share each key's conversion: both are sized to the ISA's register file.
macro_rules! entry_points {
    (
        $features:literal,
        $isa:ty,
        row_lane_acts: $acts:literal,
        attention_queries: $queries:literal
    ) => {
        entry_points!(@each $features, [$isa],
            dot_rows_q2_k(rows: &[u8], act: &[u8], out: &mut [f32]);
            dot_rows_q3_k(rows: &[u8], act: &[u8], out: &mut [f32]);
            dot_rows_q4_k(rows: &[u8], act: &[u8], out: &mut [f32]);
            dot_rows_q5_k(rows: &[u8], act: &[u8], out: &mut [f32]);
            dot_rows_q6_k(rows: &[u8], act: &[u8], out: &mut [f32]);
            dot_rows_q8_0(rows: &[u8], act: &[u8], out: &mut [f32]);
            dot_rows_q4_0(rows: &[u8], act: &[u8], out: &mut [f32]);
            dot_rows_q5_0(rows: &[u8], act: &[u8], out: &mut [f32]);
            dot_rows_q4_1(rows: &[u8], act: &[u8], out: &mut [f32]);
            dot_rows_q5_1(rows: &[u8], act: &[u8], out: &mut [f32]);
        );
        entry_points!(@each $features, [],
            dot_rows_f32(rows: &[u8], act: &[u8], out: &mut [f32]);
            dot_rows_f16(rows: &[u8], act: &[u8], out: &mut [f32]);
            dot_rows_bf16(rows: &[u8], act: &[u8], out: &mut [f32]);
            quantize_q8_0(src: &[f32], dst: &mut [u8]);
            quantize_q8_k(src: &[f32], dst: &mut [u8]);
            quantize_q8_1(src: &[f32], dst: &mut [u8]);
            softmax_exponentials(x: &mut [f32], max: f32) -> f64;
            soft_cap(x: &mut [f32], cap: f32);
        );
        entry_points!(@each $features, [$queries],
            accumulate_f16_rows(weights: &[f32], rows: &[u8], out: &mut [f32], queries: usize);
            attention_scores_f16(queries: &[u8], keys: &[u8], dim: usize, scores: &mut [f32]);
        );
        entry_points!(@each $features, [$isa, $acts],
            dot_tile_q8_0(rows: &[u8], row_bytes: usize, acts: &[u8], n_acts: usize, out: &mut [f32]);
        );

        /// The eight-row rows-in-lanes tiles of a format, of rows as the file lays them out
        /// (prompts) or grouped: one entry point per format, stamped by `install`.
        #[target_feature(enable = $features)]
        unsafe fn dot_tile<F: super::kernels::LaneFormat>(
            rows: &[u8],
            row_bytes: usize,
            acts: &[u8],
            n_acts: usize,
            out: &mut [f32],
        ) {
            // SAFETY: reachable only through a table built after checking that the CPU has
            // `$features`.
            super::kernels::dot_tile_in_lanes::<$isa, F, super::kernels::Lanes8<$isa>, $acts>(
                rows, row_bytes, acts, n_acts, out,
            )
        }

        /// Generation's kernel of a grouped format (see `GroupedRows`).
        #[target_feature(enable = $features)]
        unsafe fn dot_groups<G: super::kernels::GroupedRows>(
            groups: &[u8],
            row_bytes: usize,
            acts: &[u8],
            n_acts: usize,
            out: &mut [f32],
        ) {
            // SAFETY: as `dot_tile`'s.
            super::kernels::dot_groups_ready::<$isa, G>(groups, row_bytes, acts, n_acts, out)
        }

        /// Puts this ISA's kernels into `table`.
        pub(crate) fn install(table: &mut crate::dispatch::Table) {
            use crate::q2_k::BlockQ2K;
            use crate::q3_k::BlockQ3K;
            use crate::q4_0::BlockQ4_0Group;
            use crate::q4_1::{BlockQ4_1, BlockQ4_1Group};
            use crate::q4_k::{BlockQ4K, BlockQ4KGroup};
            use crate::q5_0::BlockQ5_0Group;
            use crate::q5_1::{BlockQ5_1, BlockQ5_1Group};
            use crate::q5_k::{BlockQ5K, BlockQ5KGroup};
            use crate::q6_k::{BlockQ6K, BlockQ6KGroup};
            use crate::types::GgmlType::*;
            use crate::x86::kernels::{
                GroupedLanes, GroupedMinLanes, InLanes, MinInLanes, Q4_0Plus8, Q5_0Plus16,
                SignedQ8_0, SubBlockLanes,
            };
            use crate::x86::ready;
            table.dot_rows[Q2_K as usize] = Some(dot_rows_q2_k);
            table.dot_rows[Q3_K as usize] = Some(dot_rows_q3_k);
            table.dot_tile[Q2_K as usize] = Some(dot_tile::<SubBlockLanes<BlockQ2K>>);
            table.dot_tile[Q3_K as usize] = Some(dot_tile::<SubBlockLanes<BlockQ3K>>);
            table.dot_rows[Q4_K as usize] = Some(dot_rows_q4_k);
            table.dot_rows[Q5_K as usize] = Some(dot_rows_q5_k);
            table.dot_rows[Q6_K as usize] = Some(dot_rows_q6_k);
            table.dot_rows[Q8_0 as usize] = Some(dot_rows_q8_0);
            table.dot_rows[Q4_0 as usize] = Some(dot_rows_q4_0);
            table.dot_rows[Q5_0 as usize] = Some(dot_rows_q5_0);
            table.prepare_rows[Q8_0 as usize] = Some(ready::<SignedQ8_0>);
            table.prepare_rows[Q4_0 as usize] = Some(ready::<Q4_0Plus8>);
            table.prepare_rows[Q5_0 as usize] = Some(ready::<Q5_0Plus16>);
            table.dot_rows[Q4_1 as usize] = Some(dot_rows_q4_1);
            table.dot_rows[Q5_1 as usize] = Some(dot_rows_q5_1);
            table.dot_rows[F32 as usize] = Some(dot_rows_f32);
            table.dot_rows[F16 as usize] = Some(dot_rows_f16);
            table.dot_rows[BF16 as usize] = Some(dot_rows_bf16);
            table.quantize[Q8_0 as usize] = Some(quantize_q8_0);
            table.quantize[Q8_K as usize] = Some(quantize_q8_k);
            table.quantize[Q8_1 as usize] = Some(quantize_q8_1);
            table.accumulate_f16_rows = accumulate_f16_rows;
            table.attention_scores_f16 = Some(attention_scores_f16);
            table.softmax_exponentials = softmax_exponentials;
            table.soft_cap = soft_cap;
            table.dot_tile[Q8_0 as usize] = Some(dot_tile_q8_0);
            table.dot_tile[Q5_0 as usize] = Some(dot_tile::<InLanes<Q5_0Plus16>>);
            table.dot_tile[Q4_0 as usize] = Some(dot_tile::<InLanes<Q4_0Plus8>>);
            table.dot_tile[Q4_K as usize] = Some(dot_tile::<BlockQ4K>);
            table.dot_tile[Q5_K as usize] = Some(dot_tile::<BlockQ5K>);
            table.dot_tile[Q4_1 as usize] = Some(dot_tile::<MinInLanes<BlockQ4_1>>);
            table.dot_tile[Q5_1 as usize] = Some(dot_tile::<MinInLanes<BlockQ5_1>>);
            table.dot_tile[Q6_K as usize] = Some(dot_tile::<SubBlockLanes<BlockQ6K>>);
            table.dot_groups[Q4_K as usize] = Some(dot_groups::<BlockQ4KGroup>);
            table.dot_groups_tile[Q4_K as usize] = Some(dot_tile::<BlockQ4KGroup>);
            table.dot_groups[Q5_K as usize] = Some(dot_groups::<BlockQ5KGroup>);
            table.dot_groups_tile[Q5_K as usize] = Some(dot_tile::<BlockQ5KGroup>);
            table.dot_groups[Q6_K as usize] = Some(dot_groups::<BlockQ6KGroup>);
            table.dot_groups_tile[Q6_K as usize] = Some(dot_tile::<BlockQ6KGroup>);
            table.dot_groups[Q5_0 as usize] = Some(dot_groups::<GroupedLanes<BlockQ5_0Group>>);
            table.prepare_groups[Q5_0 as usize] = Some(ready::<Q5_0Plus16>);
            table.dot_groups_tile[Q5_0 as usize] = Some(dot_tile::<GroupedLanes<BlockQ5_0Group>>);
            table.dot_groups[Q4_0 as usize] = Some(dot_groups::<GroupedLanes<BlockQ4_0Group>>);
            table.prepare_groups[Q4_0 as usize] = Some(ready::<Q4_0Plus8>);
            table.dot_groups_tile[Q4_0 as usize] = Some(dot_tile::<GroupedLanes<BlockQ4_0Group>>);
            table.dot_groups[Q4_1 as usize] = Some(dot_groups::<GroupedMinLanes<BlockQ4_1Group>>);
            table.dot_groups_tile[Q4_1 as usize] =
                Some(dot_tile::<GroupedMinLanes<BlockQ4_1Group>>);
            table.dot_groups[Q5_1 as usize] = Some(dot_groups::<GroupedMinLanes<BlockQ5_1Group>>);
            table.dot_groups_tile[Q5_1 as usize] =
                Some(dot_tile::<GroupedMinLanes<BlockQ5_1Group>>);
        }
    };
    (@each $features:literal, $generics:tt, $($name:ident $args:tt $(-> $ret:ty)?;)*) => {
        $(entry_points!(@one $features, $generics, $name $args $(-> $ret)?);)*
    };
    (@one $features:literal, [$($generic:tt)*],
        $name:ident($($arg:ident: $type:ty),*) $(-> $ret:ty)?
    ) => {
        #[target_feature(enable = $features)]
        unsafe fn $name($($arg: $type),*) $(-> $ret)? {
            // SAFETY: reachable only through a table built after checking that the CPU has
            // `$features`.
            super::kernels::$name::<$($generic)*>($($arg),*)
        }
    };
}
pub(crate) use entry_points;

/// Two f16s to f32 with F16C (`half` would take its software path here). Both go in
/// one `vmovd`: converting one alone, LLVM inserts it into whatever register is free,
/// often a live accumulator, and that false dependency chains every block behind the
/// previous one.
#[inline(always)]
pub(super) unsafe fn halves(a: [u8; 2], b: [u8; 2]) -> (f32, f32) {
    let bits = u16::from_le_bytes(a) as u32 | (u16::from_le_bytes(b) as u32) << 16;
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[inline(always)]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
}

#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p.cast())
}

/// The 32 nibbles of a Q4_0/Q4_1 block in element order (low nibbles first).
#[inline(always)]
unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
    let q = _mm_loadu_si128(qs.as_ptr().cast());
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(q), q);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// The eight 6-bit scales and eight 6-bit mins of a Q4_K/Q5_K block as i16 lanes,
/// unpacked in general registers four at a time (the scalar reference's byte arrays,
/// read back by a vector load, would stall on store forwarding every block).
#[inline(always)]
pub(super) unsafe fn scales_mins_k(packed: &[u8; 12]) -> (__m128i, __m128i) {
    let word = |i: usize| {
        u32::from_le_bytes([
            packed[4 * i],
            packed[4 * i + 1],
            packed[4 * i + 2],
            packed[4 * i + 3],
        ])
    };
    let (w0, w1, w2) = (word(0), word(1), word(2));
    let scales_lo = w0 & 0x3F3F_3F3F;
    let mins_lo = w1 & 0x3F3F_3F3F;
    let scales_hi = (w2 & 0x0F0F_0F0F) | ((w0 >> 6) & 0x0303_0303) << 4;
    let mins_hi = ((w2 >> 4) & 0x0F0F_0F0F) | ((w1 >> 6) & 0x0303_0303) << 4;
    let widen = |lo: u32, hi: u32| {
        _mm_cvtepu8_epi16(_mm_cvtsi64_si128(((hi as u64) << 32 | lo as u64) as i64))
    };
    (widen(scales_lo, scales_hi), widen(mins_lo, mins_hi))
}

#[inline(always)]
unsafe fn dot_q4_k<I: IsaPrimitives>(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        if I::PREFETCH_SPAN_BYTES == 0 {
            _mm_prefetch::<_MM_HINT_T0>((xb as *const BlockQ4K).cast::<i8>().add(PREFETCH_BYTES));
        } else {
            prefetch_ahead::<I, _>(xb);
        }
        let (xd, xdmin) = halves(xb.d, xb.dmin);
        let d = xd * yb.d();
        let dmin = -xdmin * yb.d();
        let (sc16, mins16) = scales_mins_k(&xb.scales);

        let bsums = load(yb.bsums.as_ptr());
        let pair_sums = _mm_hadd_epi16(
            _mm256_castsi256_si128(bsums),
            _mm256_extracti128_si256::<1>(bsums),
        );
        let min_prod = _mm_madd_epi16(mins16, pair_sums);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(min_prod), acc_m);

        let sc16 = _mm256_set_m128i(sc16, sc16);
        let mut sumi = _mm256_setzero_si256();
        for c in 0..4 {
            let q4 = load(xb.qs.as_ptr().add(32 * c));
            let lo = _mm256_and_si256(q4, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4);
            let p_lo = _mm256_maddubs_epi16(lo, load(yb.qs.as_ptr().add(64 * c).cast()));
            let p_hi = _mm256_maddubs_epi16(hi, load(yb.qs.as_ptr().add(64 * c + 32).cast()));
            let j = 2 * c as i16;
            let s_lo = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16(((2 * j + 1) << 8) | (2 * j)));
            let s_hi =
                _mm256_shuffle_epi8(sc16, _mm256_set1_epi16(((2 * j + 3) << 8) | (2 * j + 2)));
            sumi = I::madd_acc(sumi, p_lo, s_lo);
            sumi = I::madd_acc(sumi, p_hi, s_hi);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    hsum_ps(acc) + _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)))
}

#[inline(always)]
unsafe fn dot_q5_k<I: IsaPrimitives>(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    let two = _mm256_set1_epi8(2);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        prefetch_ahead::<I, _>(xb);
        let (xd, xdmin) = halves(xb.d, xb.dmin);
        let d = xd * yb.d();
        let dmin = -xdmin * yb.d();
        let (sc16, mins16) = scales_mins_k(&xb.scales);

        let bsums = load(yb.bsums.as_ptr());
        let pair_sums = _mm_hadd_epi16(
            _mm256_castsi256_si128(bsums),
            _mm256_extracti128_si256::<1>(bsums),
        );
        let min_prod = _mm_madd_epi16(mins16, pair_sums);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(min_prod), acc_m);

        let sc16 = _mm256_set_m128i(sc16, sc16);
        // Bit 2c of each qh byte is the fifth bit for sub-block 2c, bit 2c+1 for 2c+1;
        // shifting by two per chunk keeps the bits needed next at positions 0 and 1.
        let mut hbits = load(xb.qh.as_ptr());
        let mut sumi = _mm256_setzero_si256();
        for c in 0..4 {
            let q4 = load(xb.qs.as_ptr().add(32 * c));
            let lo = _mm256_or_si256(
                _mm256_and_si256(q4, m4),
                _mm256_slli_epi16::<4>(_mm256_and_si256(hbits, one)),
            );
            let hi = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4),
                _mm256_slli_epi16::<3>(_mm256_and_si256(hbits, two)),
            );
            hbits = _mm256_srli_epi16::<2>(hbits);
            let p_lo = _mm256_maddubs_epi16(lo, load(yb.qs.as_ptr().add(64 * c).cast()));
            let p_hi = _mm256_maddubs_epi16(hi, load(yb.qs.as_ptr().add(64 * c + 32).cast()));
            let j = 2 * c as i16;
            let s_lo = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16(((2 * j + 1) << 8) | (2 * j)));
            let s_hi =
                _mm256_shuffle_epi8(sc16, _mm256_set1_epi16(((2 * j + 3) << 8) | (2 * j + 2)));
            sumi = I::madd_acc(sumi, p_lo, s_lo);
            sumi = I::madd_acc(sumi, p_hi, s_hi);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    hsum_ps(acc) + _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)))
}

/// Multiplies the unsigned 6-bit quants (0..63) and subtracts 32·Σ sc·bsum once per
/// block instead of re-centring every quant.
#[inline(always)]
unsafe fn dot_q6_k<I: IsaPrimitives>(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(0x30);
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        prefetch_ahead::<I, _>(xb);
        let d = halves(xb.d, xb.d).0 * yb.d();
        let sc8 = _mm_loadu_si128(xb.scales.as_ptr().cast());
        let sc16 = _mm256_cvtepi8_epi16(sc8);
        let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, load(yb.bsums.as_ptr())));
        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            // The eight i16 scales of this half in both 128-bit lanes, so one byte
            // shuffle puts sub-block j's scale in the low lane and j+1's in the high.
            let half_sc = _mm_cvtepi8_epi16(if h == 0 {
                sc8
            } else {
                _mm_unpackhi_epi64(sc8, sc8)
            });
            let half_sc = _mm256_set_m128i(half_sc, half_sc);
            let ql0 = load(xb.ql.as_ptr().add(64 * h));
            let ql1 = load(xb.ql.as_ptr().add(64 * h + 32));
            let qh = load(xb.qh.as_ptr().add(32 * h));
            let quarters = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    _mm256_and_si256(qh, m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2),
                ),
            ];
            for (k, q) in quarters.into_iter().enumerate() {
                let q8 = load(yb.qs.as_ptr().add(128 * h + 32 * k).cast());
                let p = _mm256_maddubs_epi16(q, q8);
                let w = 2 * k as i16; // word index of sub-block 8h + 2k in half_sc
                let pick = _mm256_set_m128i(
                    _mm_set1_epi16(((2 * w + 3) << 8) | (2 * w + 2)),
                    _mm_set1_epi16(((2 * w + 1) << 8) | (2 * w)),
                );
                sumi = I::madd_acc(sumi, p, _mm256_shuffle_epi8(half_sc, pick));
            }
        }
        let sumi = _mm256_sub_epi32(sumi, offset);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

/// A 32-element format of unsigned quants with a scale and a min per block (value = q·d + m),
/// whose dot products take Q8_1 activations: the min meets the activation's `s` = d·Σa.
pub(super) trait QuantsWithMin: Block {
    /// The largest of `quants`.
    const MAX_QUANT: i32;
    /// The 32 quants in element order.
    unsafe fn quants<I: IsaPrimitives>(&self) -> __m256i;
    fn scale(&self) -> [u8; 2];
    fn min(&self) -> [u8; 2];
}

impl QuantsWithMin for BlockQ4_1 {
    const MAX_QUANT: i32 = 15;
    #[inline(always)]
    unsafe fn quants<I: IsaPrimitives>(&self) -> __m256i {
        nibbles(&self.qs)
    }

    fn scale(&self) -> [u8; 2] {
        self.d
    }

    fn min(&self) -> [u8; 2] {
        self.m
    }
}

/// The nibbles plus 16 where their fifth bit is set: 0..31.
impl QuantsWithMin for BlockQ5_1 {
    const MAX_QUANT: i32 = 31;
    #[inline(always)]
    unsafe fn quants<I: IsaPrimitives>(&self) -> __m256i {
        I::add_16_where_set(nibbles(&self.qs), self.qh)
    }

    fn scale(&self) -> [u8; 2] {
        self.d
    }

    fn min(&self) -> [u8; 2] {
        self.m
    }
}

#[inline(always)]
unsafe fn dot_with_min<I: IsaPrimitives, F: QuantsWithMin, const T: usize>(
    x: &[F],
    y: [&[BlockQ8_1]; T],
) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let mut offsets = [0.0f32; T];
    for (b, xb) in x.iter().enumerate() {
        if T == 1 {
            prefetch_ahead::<I, _>(xb);
        }
        let quants = xb.quants::<I>();
        let (xd, m) = halves(xb.scale(), xb.min());
        for t in 0..T {
            let yb = y[t].get_unchecked(b);
            let (yd, s) = halves(yb.d, yb.s);
            let d = xd * yd;
            offsets[t] += m * s;
            let s = I::dot_u8_i8(_mm256_setzero_si256(), quants, load(yb.qs.as_ptr().cast()));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_ps(acc[t]) + offsets[t])
}

/// Shared by F32, F16 and BF16: `widen(p)` loads the 8 elements of `size` bytes at
/// `p` as f32.
#[inline(always)]
unsafe fn dot_floats<const SIZE: usize>(
    x: *const u8,
    y: *const u8,
    n: usize,
    widen: impl Fn(*const u8) -> __m256,
) -> f32 {
    let mut sums = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, s) in sums.iter_mut().enumerate() {
            let at = SIZE * (i + 8 * k);
            *s = _mm256_fmadd_ps(widen(x.add(at)), widen(y.add(at)), *s);
        }
        i += 32;
    }
    while i + 8 <= n {
        let at = SIZE * i;
        sums[0] = _mm256_fmadd_ps(widen(x.add(at)), widen(y.add(at)), sums[0]);
        i += 8;
    }
    let total = _mm256_add_ps(
        _mm256_add_ps(sums[0], sums[1]),
        _mm256_add_ps(sums[2], sums[3]),
    );
    let mut sum = hsum_ps(total);
    let rest = n - i;
    if rest > 0 {
        // Zero-padded copies of the last partial group of 8.
        let mut tail_x = [0u8; 32];
        let mut tail_y = [0u8; 32];
        std::ptr::copy_nonoverlapping(x.add(SIZE * i), tail_x.as_mut_ptr(), SIZE * rest);
        std::ptr::copy_nonoverlapping(y.add(SIZE * i), tail_y.as_mut_ptr(), SIZE * rest);
        sum += hsum_ps(_mm256_mul_ps(
            widen(tail_x.as_ptr()),
            widen(tail_y.as_ptr()),
        ));
    }
    sum
}

#[inline(always)]
unsafe fn dot_f32(x: &[F32], y: &[F32]) -> f32 {
    dot_floats::<4>(x.as_ptr().cast(), y.as_ptr().cast(), x.len(), |p| {
        _mm256_loadu_ps(p.cast())
    })
}

#[inline(always)]
unsafe fn dot_f16(x: &[F16], y: &[F16]) -> f32 {
    dot_floats::<2>(x.as_ptr().cast(), y.as_ptr().cast(), x.len(), |p| {
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
    })
}

#[inline(always)]
unsafe fn dot_bf16(x: &[Bf16], y: &[Bf16]) -> f32 {
    dot_floats::<2>(x.as_ptr().cast(), y.as_ptr().cast(), x.len(), |p| {
        let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
    })
}

/// How far ahead of the block being multiplied some dot products ask for the weights, one
/// line per block, where the ISA asks for no spans (`IsaPrimitives::PREFETCH_SPAN_BYTES`).
/// Measured per kernel (dot_rows bench): Q4_K rows from DRAM 17.6 -> 19.3 GB/s, the
/// 32-element tiles from L3 15 -> 17-20; Q6_K got slower and Q5_K no faster, so they
/// do without.
const PREFETCH_BYTES: usize = 1024;

/// Asks for the weights `I::PREFETCH_SPAN_BYTES` past the start of block `xb`, a block's
/// span of them, so that as a row's or a stripe's blocks go by each line is asked for once.
/// Kernels shared with the prompt tiles ask only with one activation (generation): a tile
/// meets each block with several and reads its weights at the pace of its arithmetic.
#[inline(always)]
unsafe fn prefetch_ahead<I: IsaPrimitives, G>(xb: &G) {
    if I::PREFETCH_SPAN_BYTES == 0 {
        return;
    }
    let ahead = (xb as *const G)
        .cast::<i8>()
        .wrapping_add(I::PREFETCH_SPAN_BYTES);
    for line in (0..size_of::<G>()).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line));
    }
}

/// An f16 scale, converted and broadcast to eight lanes.
#[inline(always)]
unsafe fn broadcast_f16(d: [u8; 2]) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(d)))
}

/// A 32-element weight format as the byte products read it: `quants` gives a block's 32
/// quants and its f16 scale. With `OFFSET` 0 the quants are signed bytes (a −128 is read as
/// magnitude 128, exact because Q8_0 activations stop at ±127). Otherwise they are unsigned
/// and stand for `q − OFFSET`, the offset read as an unsigned byte as `vpdpbusd` reads the
/// quants (Q4_0: 8, Q5_0: 16, Q8_0 plus 128: −128, the byte 0x80): they go into the unsigned
/// side of the byte dot product as they are, and the offset's share, −OFFSET·Σa, depends only
/// on the activation block, so it is computed once for all rows and starts each row's sum.
pub(super) trait Quants32: RowQuants32 {
    const OFFSET: i8;
}

/// A 32-element block's quants in element order and its f16 scale, as the rows-in-lanes
/// packs read them.
pub(super) trait RowQuants32 {
    type Block: Block;
    unsafe fn quants<I: IsaPrimitives>(x: &Self::Block) -> (__m256i, [u8; 2]);
}

/// Q8_0's quants as they are, signed.
pub(super) struct SignedQ8_0;

/// Q8_0's quants as unsigned `q + 128`.
pub(super) struct Q8_0Plus128;

/// Q5_0's quants as unsigned `q + 16`.
pub(super) struct Q5_0Plus16;

/// Q4_0's quants as unsigned `q + 8`.
pub(super) struct Q4_0Plus8;

impl Quants32 for SignedQ8_0 {
    const OFFSET: i8 = 0;
}

impl RowQuants32 for SignedQ8_0 {
    type Block = BlockQ8_0;
    #[inline(always)]
    unsafe fn quants<I: IsaPrimitives>(x: &BlockQ8_0) -> (__m256i, [u8; 2]) {
        (load(x.qs.as_ptr().cast()), x.d)
    }
}

impl Quants32 for Q8_0Plus128 {
    const OFFSET: i8 = i8::MIN;
}

impl RowQuants32 for Q8_0Plus128 {
    type Block = BlockQ8_0;
    #[inline(always)]
    unsafe fn quants<I: IsaPrimitives>(x: &BlockQ8_0) -> (__m256i, [u8; 2]) {
        let q = load(x.qs.as_ptr().cast());
        (_mm256_xor_si256(q, _mm256_set1_epi8(i8::MIN)), x.d)
    }
}

impl Quants32 for Q5_0Plus16 {
    const OFFSET: i8 = 16;
}

impl RowQuants32 for Q5_0Plus16 {
    type Block = BlockQ5_0;
    #[inline(always)]
    unsafe fn quants<I: IsaPrimitives>(x: &BlockQ5_0) -> (__m256i, [u8; 2]) {
        (I::add_16_where_set(nibbles(&x.qs), x.qh), x.d)
    }
}

impl Quants32 for Q4_0Plus8 {
    const OFFSET: i8 = 8;
}

impl RowQuants32 for Q4_0Plus8 {
    type Block = BlockQ4_0;
    #[inline(always)]
    unsafe fn quants<I: IsaPrimitives>(x: &BlockQ4_0) -> (__m256i, [u8; 2]) {
        (nibbles(&x.qs), x.d)
    }
}

/// −offset·Σa of a Q8_0 activation block for weights of format `F`: it starts the block's
/// sum in the rows-in-lanes tiles.
pub(super) fn offset_sum<F: Quants32>(a: &BlockQ8_0) -> std::iter::Once<i32> {
    std::iter::once(-i32::from(F::OFFSET as u8) * crate::x86::quant_sum(a))
}

/// `R` weight rows × `T` activation rows of a 32-element format with Q8_0 activations.
/// Each weight block is unpacked once for `T` activations and each activation block
/// loaded once for `R` rows; the R·T sums stay in registers.
#[inline(always)]
unsafe fn tile_q8_acts<I: IsaPrimitives, F: Quants32, const R: usize, const T: usize>(
    rows: [&[F::Block]; R],
    acts: [&[BlockQ8_0]; T],
    out: &mut [f32],
    out_stride: usize,
) {
    let zero = _mm256_setzero_si256();
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for b in 0..rows[0].len() {
        let mut a = [zero; T];
        let mut ad = [_mm256_setzero_ps(); T];
        let mut start = [zero; T];
        for t in 0..T {
            let block = acts[t].get_unchecked(b);
            a[t] = load(block.qs.as_ptr().cast());
            ad[t] = broadcast_f16(block.d);
            if F::OFFSET != 0 {
                let offset_sum = I::dot_u8_i8(zero, _mm256_set1_epi8(F::OFFSET), a[t]);
                start[t] = _mm256_sub_epi32(zero, offset_sum);
            }
        }
        for r in 0..R {
            // The same block of the row R rows on, which the next tile reads: rows
            // lie one after another, and a row of a small model (640 Q8_0 quants,
            // 680 bytes) is shorter than a fixed distance ahead would have to be.
            let ahead = rows[r]
                .as_ptr()
                .add(b)
                .cast::<i8>()
                .wrapping_add(R * size_of_val(rows[r]));
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            let (w, wd) = F::quants::<I>(rows[r].get_unchecked(b));
            let wd = broadcast_f16(wd);
            let w_abs = _mm256_sign_epi8(w, w);
            for t in 0..T {
                let s = if F::OFFSET != 0 {
                    I::dot_u8_i8(start[t], w, a[t])
                } else {
                    I::dot_u8_i8(zero, w_abs, _mm256_sign_epi8(a[t], w))
                };
                let scale = _mm256_mul_ps(wd, ad[t]);
                acc[r][t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(s), acc[r][t]);
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            out[t * out_stride + r] = hsum_ps(acc[r][t]);
        }
    }
}

/// `tile_q8_acts` with as many activations as `acts` holds, one to four.
#[inline(always)]
unsafe fn tile_q8_acts_of<I: IsaPrimitives, F: Quants32, const R: usize>(
    rows: [&[F::Block]; R],
    acts: &[&[BlockQ8_0]],
    out: &mut [f32],
    out_stride: usize,
) {
    match acts.len() {
        4 => tile_q8_acts::<I, F, R, 4>(rows, std::array::from_fn(|t| acts[t]), out, out_stride),
        3 => tile_q8_acts::<I, F, R, 3>(rows, std::array::from_fn(|t| acts[t]), out, out_stride),
        2 => tile_q8_acts::<I, F, R, 2>(rows, std::array::from_fn(|t| acts[t]), out, out_stride),
        _ => tile_q8_acts::<I, F, R, 1>(rows, [acts[0]], out, out_stride),
    }
}

/// Drives `tile_q8_acts` over all rows × activations: tiles of 4 × 4, activations in
/// groups that stay in L2 while the rows pass over them. Activation row t's results
/// go to `out[t * out_stride..]`.
#[inline(always)]
unsafe fn tiles_q8_acts<I: IsaPrimitives, F: Quants32>(
    rows: &[u8],
    row_bytes: usize,
    acts: &[u8],
    n_acts: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    const ACT_GROUP: usize = 64;
    let n_rows = rows.len() / row_bytes;
    let act_bytes = acts.len() / n_acts;
    let row = |r: usize| as_blocks::<F::Block>(&rows[r * row_bytes..(r + 1) * row_bytes]);
    let act = |t: usize| as_blocks::<BlockQ8_0>(&acts[t * act_bytes..(t + 1) * act_bytes]);
    let mut tile_acts: [&[BlockQ8_0]; 4] = [&[]; 4];
    for group in (0..n_acts).step_by(ACT_GROUP) {
        let group_end = (group + ACT_GROUP).min(n_acts);
        for r0 in (0..n_rows).step_by(4) {
            let rr = (n_rows - r0).min(4);
            let mut t0 = group;
            while t0 < group_end {
                let tt = (group_end - t0).min(4);
                for (i, a) in tile_acts[..tt].iter_mut().enumerate() {
                    *a = act(t0 + i);
                }
                let tile_acts = &tile_acts[..tt];
                if rr == 4 {
                    let out = &mut out[t0 * out_stride + r0..];
                    let rows = std::array::from_fn(|i| row(r0 + i));
                    tile_q8_acts_of::<I, F, 4>(rows, tile_acts, out, out_stride);
                } else {
                    for r in r0..r0 + rr {
                        let out = &mut out[t0 * out_stride + r..];
                        tile_q8_acts_of::<I, F, 1>([row(r)], tile_acts, out, out_stride);
                    }
                }
                t0 += tt;
            }
        }
    }
}

/// The registers a rows-in-lanes tile keeps its rows' sums in, one row per 32-bit lane:
/// eight rows in 256 bits (`Lanes8`) or sixteen in 512 (`Lanes16`, AVX-512 only). The tiles
/// are written once over these operations.
pub(super) trait RowLanes: Sized {
    const LANES: usize;
    /// Four quant bytes, or one i32 sum, per row.
    type Ints: Copy;
    /// One f32 per row.
    type Floats: Copy;
    unsafe fn zero_ints() -> Self::Ints;
    unsafe fn zero_floats() -> Self::Floats;
    unsafe fn splat_i32(x: i32) -> Self::Ints;
    unsafe fn splat_f32(x: f32) -> Self::Floats;
    unsafe fn splat_f16(x: [u8; 2]) -> Self::Floats;
    /// The low four bits of every byte.
    unsafe fn low_nibbles(q: Self::Ints) -> Self::Ints;
    /// The high four bits of every byte, moved to the low four.
    unsafe fn high_nibbles(q: Self::Ints) -> Self::Ints;
    /// Adds to each row's sum the products of its four unsigned quant bytes with the four
    /// signed bytes of `four`, the same for every row.
    unsafe fn add_byte_products(acc: Self::Ints, quants: Self::Ints, four: i32) -> Self::Ints;
    /// Adds to each row's sum the products of its two i16 words with the two of `two`, the
    /// same for every row.
    unsafe fn add_word_products(acc: Self::Ints, words: Self::Ints, two: i32) -> Self::Ints;
    unsafe fn to_floats(x: Self::Ints) -> Self::Floats;
    unsafe fn mul(a: Self::Floats, b: Self::Floats) -> Self::Floats;
    /// `a · b + c`.
    unsafe fn mul_add(a: Self::Floats, b: Self::Floats, c: Self::Floats) -> Self::Floats;
    /// `c − a · b`.
    unsafe fn neg_mul_add(a: Self::Floats, b: Self::Floats, c: Self::Floats) -> Self::Floats;
    unsafe fn store(out: *mut f32, x: Self::Floats);
    /// `T` accumulators of rows-in-lanes products: accumulator t adds `w[k]` times bytes
    /// 4k..4k+3 of `acts[t]` broadcast, for k < `K`, where no quant of `w` exceeds the
    /// maximum given. One `add_byte_products` per k, unless the ISA has a faster way.
    #[inline(always)]
    unsafe fn dots<const T: usize, const K: usize>(
        starts: [Self::Ints; T],
        w: &[Self::Ints],
        acts: [*const i8; T],
        _max_quant: i32,
    ) -> [Self::Ints; T] {
        dots_by_fours::<Self, T, K>(starts, w, acts)
    }
    /// Block b of the stripes of format `F`, one row per lane.
    unsafe fn pack<F: LaneFormat>(stripes: &[&[F::Weight]], b: usize, packed: &mut F::Packed<Self>);
}

/// Eight rows in 256-bit registers, the byte products as the ISA `I` takes them.
pub(super) struct Lanes8<I>(std::marker::PhantomData<I>);

impl<I: IsaPrimitives> RowLanes for Lanes8<I> {
    const LANES: usize = 8;
    type Ints = __m256i;
    type Floats = __m256;

    #[inline(always)]
    unsafe fn zero_ints() -> __m256i {
        _mm256_setzero_si256()
    }

    #[inline(always)]
    unsafe fn zero_floats() -> __m256 {
        _mm256_setzero_ps()
    }

    #[inline(always)]
    unsafe fn splat_i32(x: i32) -> __m256i {
        _mm256_set1_epi32(x)
    }

    #[inline(always)]
    unsafe fn splat_f32(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }

    #[inline(always)]
    unsafe fn splat_f16(x: [u8; 2]) -> __m256 {
        broadcast_f16(x)
    }

    #[inline(always)]
    unsafe fn low_nibbles(q: __m256i) -> __m256i {
        _mm256_and_si256(q, _mm256_set1_epi8(0x0F))
    }

    #[inline(always)]
    unsafe fn high_nibbles(q: __m256i) -> __m256i {
        _mm256_and_si256(_mm256_srli_epi16::<4>(q), _mm256_set1_epi8(0x0F))
    }

    #[inline(always)]
    unsafe fn add_byte_products(acc: __m256i, quants: __m256i, four: i32) -> __m256i {
        I::dot_u8_i8(acc, quants, _mm256_set1_epi32(four))
    }

    #[inline(always)]
    unsafe fn add_word_products(acc: __m256i, words: __m256i, two: i32) -> __m256i {
        I::madd_acc(acc, words, _mm256_set1_epi32(two))
    }

    #[inline(always)]
    unsafe fn to_floats(x: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(x)
    }

    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }

    #[inline(always)]
    unsafe fn mul_add(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }

    #[inline(always)]
    unsafe fn neg_mul_add(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fnmadd_ps(a, b, c)
    }

    #[inline(always)]
    unsafe fn store(out: *mut f32, x: __m256) {
        _mm256_storeu_ps(out, x)
    }

    #[inline(always)]
    unsafe fn dots<const T: usize, const K: usize>(
        starts: [__m256i; T],
        w: &[__m256i],
        acts: [*const i8; T],
        max_quant: i32,
    ) -> [__m256i; T] {
        if I::UNSATURATED_BYTE_PRODUCTS {
            dots_by_fours::<Self, T, K>(starts, w, acts)
        } else {
            dots_in_runs::<I, T, K>(starts, w, acts, max_quant)
        }
    }

    #[inline(always)]
    unsafe fn pack<F: LaneFormat>(
        stripes: &[&[F::Weight]],
        b: usize,
        packed: &mut F::Packed<Self>,
    ) {
        F::pack_8::<I>(stripes, b, packed)
    }
}

/// `RowLanes::dots` by one `add_byte_products` per four bytes. The k loop runs outside the
/// t loop so that consecutive `vpdpbusd` feed different accumulators and no chain waits on
/// the one before it (on Zen 4 this measures the same as the other order, whose chains the
/// out-of-order window already overlaps; a core with a smaller window would not).
#[inline(always)]
unsafe fn dots_by_fours<V: RowLanes, const T: usize, const K: usize>(
    starts: [V::Ints; T],
    w: &[V::Ints],
    acts: [*const i8; T],
) -> [V::Ints; T] {
    let mut s = starts;
    for (k, wk) in w[..K].iter().enumerate() {
        for t in 0..T {
            let four = i32::from_le_bytes(*acts[t].add(4 * k).cast::<[u8; 4]>());
            s[t] = V::add_byte_products(s[t], *wk, four);
        }
    }
    s
}

/// `RowLanes::dots` in runs (`IsaPrimitives::add_run_products`): AVX2's four-byte product
/// would be three instructions, `vpmaddubsw` into word pairs, a multiply-add of the words
/// by ones into i32 and an add, all on the ports the products need. The words are added as
/// words while they cannot overflow and widened once per run: eight products per run for
/// Q4_K's quants (up to 15 against activations up to ±128), two for Q6_K's. Q4_K's prompt
/// tiles take 17 instructions per 32-quant sub-block and activation instead of 24.
#[inline(always)]
unsafe fn dots_in_runs<I: IsaPrimitives, const T: usize, const K: usize>(
    starts: [__m256i; T],
    w: &[__m256i],
    acts: [*const i8; T],
    max_quant: i32,
) -> [__m256i; T] {
    let run = I::run_len(max_quant);
    let one = I::run_scale(_mm256_set1_epi32(1));
    let mut s = starts;
    for first in (0..K).step_by(run) {
        let mut sums = [_mm256_setzero_si256(); T];
        for (k, wk) in w[..K].iter().enumerate().skip(first).take(run) {
            for t in 0..T {
                let four = i32::from_le_bytes(*acts[t].add(4 * k).cast::<[u8; 4]>());
                sums[t] = I::add_run_products(sums[t], *wk, _mm256_set1_epi32(four));
            }
        }
        for t in 0..T {
            s[t] = I::add_scaled_run(s[t], sums[t], one);
        }
    }
    s
}

/// `Clone` and `Copy` for a pack generic over its lanes: `derive` would ask them of `V`
/// instead of the vectors the pack holds.
macro_rules! copy_pack {
    ($pack:ident) => {
        impl<V: RowLanes> Clone for $pack<V> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<V: RowLanes> Copy for $pack<V> {}
    };
}

/// Transposes eight vectors of eight 32-bit lanes: lane i of result k is lane k of
/// input i.
#[inline(always)]
unsafe fn transpose_dwords(v: [__m256i; 8]) -> [__m256i; 8] {
    let t = [
        _mm256_unpacklo_epi32(v[0], v[1]),
        _mm256_unpackhi_epi32(v[0], v[1]),
        _mm256_unpacklo_epi32(v[2], v[3]),
        _mm256_unpackhi_epi32(v[2], v[3]),
        _mm256_unpacklo_epi32(v[4], v[5]),
        _mm256_unpackhi_epi32(v[4], v[5]),
        _mm256_unpacklo_epi32(v[6], v[7]),
        _mm256_unpackhi_epi32(v[6], v[7]),
    ];
    let u = [
        _mm256_unpacklo_epi64(t[0], t[2]),
        _mm256_unpackhi_epi64(t[0], t[2]),
        _mm256_unpacklo_epi64(t[1], t[3]),
        _mm256_unpackhi_epi64(t[1], t[3]),
        _mm256_unpacklo_epi64(t[4], t[6]),
        _mm256_unpackhi_epi64(t[4], t[6]),
        _mm256_unpacklo_epi64(t[5], t[7]),
        _mm256_unpackhi_epi64(t[5], t[7]),
    ];
    [
        _mm256_permute2x128_si256::<0x20>(u[0], u[4]),
        _mm256_permute2x128_si256::<0x20>(u[1], u[5]),
        _mm256_permute2x128_si256::<0x20>(u[2], u[6]),
        _mm256_permute2x128_si256::<0x20>(u[3], u[7]),
        _mm256_permute2x128_si256::<0x31>(u[0], u[4]),
        _mm256_permute2x128_si256::<0x31>(u[1], u[5]),
        _mm256_permute2x128_si256::<0x31>(u[2], u[6]),
        _mm256_permute2x128_si256::<0x31>(u[3], u[7]),
    ]
}

/// The rows of one block of a format with unsigned quants standing for `q − offset`, laid
/// out for `tile_32_rows_in_lanes`: register k holds quants 4k..4k+3 of every row, and the
/// rows' scales are f32 lanes.
#[repr(C)]
pub(super) struct Packed32<V: RowLanes> {
    quants: [V::Ints; 8],
    scales: V::Floats,
}
copy_pack!(Packed32);

#[inline(always)]
unsafe fn pack_32_8_rows<I: IsaPrimitives, F: RowQuants32>(
    rows: &[&[F::Block]],
    b: usize,
    packed: &mut Packed32<Lanes8<I>>,
) {
    let mut w = [_mm256_setzero_si256(); 8];
    let mut d = [0u16; 8];
    for i in 0..8 {
        let (q, scale) = F::quants::<I>(rows[i].get_unchecked(b));
        w[i] = q;
        d[i] = u16::from_le_bytes(scale);
    }
    packed.quants = transpose_dwords(w);
    packed.scales = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().cast()));
}

/// Packed rows of a 32-element format against `T` activation rows, one row per lane: each
/// quant register meets four activation bytes broadcast, a block's row sums come out of
/// eight `vpdpbusd` in one register and are converted and scaled together, where row-by-row
/// tiles spend a conversion, a scale product and an FMA on every row and activation.
/// `offset_sums[t][b]` is −offset·Σa of activation block b, which starts its sum; no quant
/// exceeds `max_quant`.
#[inline(always)]
unsafe fn tile_32_rows_in_lanes<V: RowLanes, const T: usize>(
    packed: &[Packed32<V>],
    acts: [&[BlockQ8_0]; T],
    offset_sums: [&[i32]; T],
    max_quant: i32,
) -> [V::Floats; T] {
    let mut acc = [V::zero_floats(); T];
    for (b, p) in packed.iter().enumerate() {
        let mut starts = [V::zero_ints(); T];
        let mut qs = [std::ptr::null(); T];
        for t in 0..T {
            starts[t] = V::splat_i32(*offset_sums[t].get_unchecked(b));
            qs[t] = acts[t].get_unchecked(b).qs.as_ptr();
        }
        let sums = V::dots::<T, 8>(starts, &p.quants, qs, max_quant);
        for t in 0..T {
            let scale = V::mul(p.scales, V::splat_f16(acts[t].get_unchecked(b).d));
            acc[t] = V::mul_add(scale, V::to_floats(sums[t]), acc[t]);
        }
    }
    acc
}

/// Rows of a format with a min per block packed one row per lane: `Packed32` with the rows'
/// mins beside their scales.
#[repr(C)]
pub(super) struct Packed32Min<V: RowLanes> {
    rows: Packed32<V>,
    mins: V::Floats,
}
copy_pack!(Packed32Min);

/// The quants and scales of a format with a min per block, for `pack_32_8_rows`.
pub(super) struct QuantsOfMin<F>(std::marker::PhantomData<F>);

impl<F: QuantsWithMin> RowQuants32 for QuantsOfMin<F> {
    type Block = F;
    #[inline(always)]
    unsafe fn quants<I: IsaPrimitives>(x: &F) -> (__m256i, [u8; 2]) {
        (x.quants::<I>(), x.scale())
    }
}

#[inline(always)]
unsafe fn pack_32_min_8_rows<I: IsaPrimitives, F: QuantsWithMin>(
    rows: &[&[F]],
    b: usize,
    packed: &mut Packed32Min<Lanes8<I>>,
) {
    pack_32_8_rows::<I, QuantsOfMin<F>>(rows, b, &mut packed.rows);
    let mut m = [[0u8; 2]; 8];
    for i in 0..8 {
        m[i] = rows[i].get_unchecked(b).min();
    }
    packed.mins = f16_per_row(&m);
}

/// Packed rows with a min per block against `T` Q8_1 activation rows, one row per lane, as
/// `tile_32_rows_in_lanes`: a block's row sums scaled by d·d', plus the rows' mins times the
/// activation's `s` = d'·Σa.
#[inline(always)]
unsafe fn tile_32_min_rows_in_lanes<V: RowLanes, const T: usize>(
    packed: &[Packed32Min<V>],
    acts: [&[BlockQ8_1]; T],
    max_quant: i32,
) -> [V::Floats; T] {
    let mut acc = [V::zero_floats(); T];
    for (b, p) in packed.iter().enumerate() {
        let qs = std::array::from_fn(|t| acts[t].get_unchecked(b).qs.as_ptr());
        let sums = V::dots::<T, 8>([V::zero_ints(); T], &p.rows.quants, qs, max_quant);
        for t in 0..T {
            let a = acts[t].get_unchecked(b);
            let scale = V::mul(p.rows.scales, V::splat_f16(a.d));
            acc[t] = V::mul_add(scale, V::to_floats(sums[t]), acc[t]);
            acc[t] = V::mul_add(p.mins, V::splat_f16(a.s), acc[t]);
        }
    }
    acc
}

/// A format with a min per block as the rows-in-lanes tiles read it.
pub(super) struct MinInLanes<F>(std::marker::PhantomData<F>);

impl<F: QuantsWithMin> LaneFormat for MinInLanes<F> {
    type Weight = F;
    type Act = BlockQ8_1;
    type Packed<V: RowLanes> = Packed32Min<V>;
    /// Nothing: the activation's `s` is in its block.
    type Extra = ();
    const EXTRA_PER_BLOCK: usize = 0;
    const MAX_QUANT: i32 = F::MAX_QUANT;

    fn extra(_: &BlockQ8_1) -> impl Iterator<Item = ()> {
        std::iter::empty()
    }

    #[inline(always)]
    unsafe fn pack_8<I: IsaPrimitives>(
        rows: &[&[F]],
        b: usize,
        packed: &mut Packed32Min<Lanes8<I>>,
    ) {
        pack_32_min_8_rows::<I, F>(rows, b, packed)
    }

    #[inline(always)]
    unsafe fn tile<V: RowLanes, const T: usize>(
        packed: &[Packed32Min<V>],
        acts: [&[BlockQ8_1]; T],
        _: [&[()]; T],
    ) -> [V::Floats; T] {
        tile_32_min_rows_in_lanes::<V, T>(packed, acts, Self::MAX_QUANT)
    }

    #[inline(always)]
    unsafe fn tail<I: IsaPrimitives>(
        rows: &[u8],
        row_bytes: usize,
        acts: &[u8],
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        tail_by_rows::<I, F>(rows, row_bytes, acts, n_acts, out, out_stride)
    }
}

/// A Q4_K or Q5_K block as the row-by-row tiles unpack it.
trait KQuantBlock {
    fn d_dmin(&self) -> ([u8; 2], [u8; 2]);
    fn packed_scales(&self) -> &[u8; 12];
    /// The eight sub-blocks' quants, unsigned.
    unsafe fn quants(&self) -> [__m256i; 8];
}

impl KQuantBlock for BlockQ4K {
    fn d_dmin(&self) -> ([u8; 2], [u8; 2]) {
        (self.d, self.dmin)
    }

    fn packed_scales(&self) -> &[u8; 12] {
        &self.scales
    }

    #[inline(always)]
    unsafe fn quants(&self) -> [__m256i; 8] {
        let m4 = _mm256_set1_epi8(0x0F);
        let mut quants = [_mm256_setzero_si256(); 8];
        for c in 0..4 {
            let q4 = load(self.qs.as_ptr().add(32 * c));
            quants[2 * c] = _mm256_and_si256(q4, m4);
            quants[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4);
        }
        quants
    }
}

/// Q4_K's nibbles with their fifth bits, as `dot_q5_k` unpacks them.
impl KQuantBlock for BlockQ5K {
    fn d_dmin(&self) -> ([u8; 2], [u8; 2]) {
        (self.d, self.dmin)
    }

    fn packed_scales(&self) -> &[u8; 12] {
        &self.scales
    }

    #[inline(always)]
    unsafe fn quants(&self) -> [__m256i; 8] {
        let m4 = _mm256_set1_epi8(0x0F);
        let (one, two) = (_mm256_set1_epi8(1), _mm256_set1_epi8(2));
        let mut hbits = load(self.qh.as_ptr());
        let mut quants = [_mm256_setzero_si256(); 8];
        for c in 0..4 {
            let q4 = load(self.qs.as_ptr().add(32 * c));
            quants[2 * c] = _mm256_or_si256(
                _mm256_and_si256(q4, m4),
                _mm256_slli_epi16::<4>(_mm256_and_si256(hbits, one)),
            );
            quants[2 * c + 1] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4),
                _mm256_slli_epi16::<3>(_mm256_and_si256(hbits, two)),
            );
            hbits = _mm256_srli_epi16::<2>(hbits);
        }
        quants
    }
}

/// One Q4_K or Q5_K row × `T` activation rows: each block's quants and scales are unpacked
/// once, then multiplied with every activation row as the row kernels do.
#[inline(always)]
unsafe fn tile_k_quant_row<I: IsaPrimitives, B: KQuantBlock, const T: usize>(
    x: &[B],
    y: [&[BlockQ8K]; T],
) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let mut acc_m = [_mm_setzero_ps(); T];
    for (b, xb) in x.iter().enumerate() {
        let (xd, xdmin) = xb.d_dmin();
        let (xd, xdmin) = halves(xd, xdmin);
        let (sc16, mins16) = scales_mins_k(xb.packed_scales());
        let sc16 = _mm256_set_m128i(sc16, sc16);
        let quants = xb.quants();
        let mut scales = [_mm256_setzero_si256(); 8];
        for (j, s) in scales.iter_mut().enumerate() {
            let j = j as i16;
            *s = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16(((2 * j + 1) << 8) | (2 * j)));
        }
        for t in 0..T {
            let yb = y[t].get_unchecked(b);
            let bsums = load(yb.bsums.as_ptr());
            let pair_sums = _mm_hadd_epi16(
                _mm256_castsi256_si128(bsums),
                _mm256_extracti128_si256::<1>(bsums),
            );
            let min_prod = _mm_madd_epi16(mins16, pair_sums);
            let dmin = _mm_set1_ps(-xdmin * yb.d());
            acc_m[t] = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(min_prod), acc_m[t]);
            let mut sumi = _mm256_setzero_si256();
            for k in 0..8 {
                let p = _mm256_maddubs_epi16(quants[k], load(yb.qs.as_ptr().add(32 * k).cast()));
                sumi = I::madd_acc(sumi, p, scales[k]);
            }
            let d = _mm256_set1_ps(xd * yb.d());
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[t]);
        }
    }
    std::array::from_fn(|t| {
        let m = _mm_add_ps(acc_m[t], _mm_movehl_ps(acc_m[t], acc_m[t]));
        hsum_ps(acc[t]) + _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)))
    })
}

/// One Q6_K row × `T` activation rows, unpacking each block once (see `dot_q6_k`).
#[inline(always)]
unsafe fn tile_q6_k<I: IsaPrimitives, const T: usize>(
    x: &[BlockQ6K],
    y: [&[BlockQ8K]; T],
) -> [f32; T] {
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(0x30);
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, xb) in x.iter().enumerate() {
        let xd = halves(xb.d, xb.d).0;
        let sc8 = _mm_loadu_si128(xb.scales.as_ptr().cast());
        let sc16 = _mm256_cvtepi8_epi16(sc8);
        let mut quants = [_mm256_setzero_si256(); 8];
        let mut scales = [_mm256_setzero_si256(); 8];
        for h in 0..2 {
            let half_sc = _mm_cvtepi8_epi16(if h == 0 {
                sc8
            } else {
                _mm_unpackhi_epi64(sc8, sc8)
            });
            let half_sc = _mm256_set_m128i(half_sc, half_sc);
            let ql0 = load(xb.ql.as_ptr().add(64 * h));
            let ql1 = load(xb.ql.as_ptr().add(64 * h + 32));
            let qh = load(xb.qh.as_ptr().add(32 * h));
            quants[4 * h] = _mm256_or_si256(
                _mm256_and_si256(ql0, m4),
                _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m2),
            );
            quants[4 * h + 1] = _mm256_or_si256(
                _mm256_and_si256(ql1, m4),
                _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m2),
            );
            quants[4 * h + 2] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                _mm256_and_si256(qh, m2),
            );
            quants[4 * h + 3] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2),
            );
            for k in 0..4 {
                let w = 2 * k as i16;
                let pick = _mm256_set_m128i(
                    _mm_set1_epi16(((2 * w + 3) << 8) | (2 * w + 2)),
                    _mm_set1_epi16(((2 * w + 1) << 8) | (2 * w)),
                );
                scales[4 * h + k] = _mm256_shuffle_epi8(half_sc, pick);
            }
        }
        for t in 0..T {
            let yb = y[t].get_unchecked(b);
            let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, load(yb.bsums.as_ptr())));
            let mut sumi = _mm256_setzero_si256();
            for k in 0..8 {
                let p = _mm256_maddubs_epi16(quants[k], load(yb.qs.as_ptr().add(32 * k).cast()));
                sumi = I::madd_acc(sumi, p, scales[k]);
            }
            let sumi = _mm256_sub_epi32(sumi, offset);
            let d = _mm256_set1_ps(xd * yb.d());
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_ps(acc[t]))
}

/// Transposes eight vectors of eight 16-bit lanes: lane i of result j is lane j of
/// input i.
#[inline(always)]
unsafe fn transpose_words(r: [__m128i; 8]) -> [__m128i; 8] {
    let a: [__m128i; 8] = std::array::from_fn(|i| {
        let (x, y) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm_unpacklo_epi16(x, y)
        } else {
            _mm_unpackhi_epi16(x, y)
        }
    });
    // b[0..4]: rows 0-3, words (0,1), (2,3), (4,5), (6,7); b[4..8]: rows 4-7.
    let b: [__m128i; 8] = std::array::from_fn(|i| {
        let base = i / 4 * 4;
        let (x, y) = (a[base + (i % 4) / 2], a[base + 2 + (i % 4) / 2]);
        if i % 2 == 0 {
            _mm_unpacklo_epi32(x, y)
        } else {
            _mm_unpackhi_epi32(x, y)
        }
    });
    std::array::from_fn(|j| {
        let (x, y) = (b[j / 2], b[4 + j / 2]);
        if j % 2 == 0 {
            _mm_unpacklo_epi64(x, y)
        } else {
            _mm_unpackhi_epi64(x, y)
        }
    })
}

/// Q4_K rows of one block laid out for `tile_k_quant_rows_in_lanes`: the quant dwords
/// transposed so that lane i holds row i, the rows' `d·scale` multiplied out, and their
/// six-bit mins in pairs of sub-blocks beside `dmin`. A row group is packed once per
/// activation group instead of in every tile of activations.
#[repr(C)]
pub(super) struct PackedQ4K<V: RowLanes> {
    quants: [[V::Ints; 8]; 4],
    scales: [V::Floats; 8],
    mins: SubBlockMins<V>,
}

/// The mins of eight sub-blocks, one row per lane: pair k holds sub-block 2k's min in its low
/// word and 2k + 1's in its high word, so that one multiply-add of words takes two sub-blocks'
/// mins against the activation's sums, exactly, in integers; `dmin` scales the total once
/// instead of each sub-block's min.
#[repr(C)]
pub(super) struct SubBlockMins<V: RowLanes> {
    pairs: [V::Ints; 4],
    dmin: V::Floats,
}
copy_pack!(SubBlockMins);

/// Eight rows' mins of eight sub-blocks, `mins[j]` holding sub-block j's as a word per row
/// (`transpose_words`' output), with their `dmin`.
#[inline(always)]
unsafe fn sub_block_mins<I: IsaPrimitives>(
    mins: [__m128i; 8],
    dmin: __m256,
) -> SubBlockMins<Lanes8<I>> {
    SubBlockMins {
        pairs: std::array::from_fn(|k| {
            let (even, odd) = (mins[2 * k], mins[2 * k + 1]);
            _mm256_set_m128i(_mm_unpackhi_epi16(even, odd), _mm_unpacklo_epi16(even, odd))
        }),
        dmin,
    }
}

/// `sums` less the mins' share: `pairs(k)` is the activation's sums over sub-blocks 2k and
/// 2k + 1, as i16 words.
#[inline(always)]
unsafe fn less_mins<V: RowLanes>(
    mins: &SubBlockMins<V>,
    pairs: impl Fn(usize) -> i32,
    sums: V::Floats,
) -> V::Floats {
    let mut min_sums = V::zero_ints();
    for (k, words) in mins.pairs.iter().enumerate() {
        min_sums = V::add_word_products(min_sums, *words, pairs(k));
    }
    V::neg_mul_add(V::to_floats(min_sums), mins.dmin, sums)
}
copy_pack!(PackedQ4K);

/// Eight f16s, one per row, to f32.
#[inline(always)]
unsafe fn f16_lanes_8<B>(blocks: &[&B], f: impl Fn(&B) -> [u8; 2]) -> __m256 {
    let h: [u16; 8] = std::array::from_fn(|i| u16::from_le_bytes(f(blocks[i])));
    _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().cast()))
}

/// Eight rows' 16-bit scales, transposed to a word per row, times `by` as f32.
#[inline(always)]
unsafe fn per_row(v: __m128i, by: __m256) -> __m256 {
    _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(v)), by)
}

/// Eight rows' `d·scale` per 32-quant sub-block and their mins, one row per lane, from
/// their Q4_K or Q5_K block headers.
#[inline(always)]
unsafe fn scales_mins_8_rows(
    d: __m256,
    dmin: __m256,
    packed_scales: [&[u8; 12]; 8],
    scales_out: &mut [__m256; 8],
    mins_out: &mut SubBlockMins<Lanes8<impl IsaPrimitives>>,
) {
    let mut scales = [_mm_setzero_si128(); 8];
    let mut mins = [_mm_setzero_si128(); 8];
    for i in 0..8 {
        (scales[i], mins[i]) = scales_mins_k(packed_scales[i]);
    }
    let (scales, mins) = (transpose_words(scales), transpose_words(mins));
    for j in 0..8 {
        scales_out[j] = per_row(scales[j], d);
    }
    *mins_out = sub_block_mins(mins, dmin);
}

#[inline(always)]
unsafe fn pack_q4_k_8_rows<I: IsaPrimitives>(
    rows: &[&[BlockQ4K]],
    b: usize,
    packed: &mut PackedQ4K<Lanes8<I>>,
) {
    let blocks: [&BlockQ4K; 8] = std::array::from_fn(|i| rows[i].get_unchecked(b));
    let d = f16_lanes_8(&blocks, |x| x.d);
    let dmin = f16_lanes_8(&blocks, |x| x.dmin);
    let packed_scales = std::array::from_fn(|i| &blocks[i].scales);
    scales_mins_8_rows(d, dmin, packed_scales, &mut packed.scales, &mut packed.mins);
    for c in 0..4 {
        let mut quants = [_mm256_setzero_si256(); 8];
        for (i, q) in quants.iter_mut().enumerate() {
            *q = load(blocks[i].qs.as_ptr().add(32 * c));
        }
        packed.quants[c] = transpose_dwords(quants);
    }
}

/// Q5_K rows of one block laid out for `tile_k_quant_rows_in_lanes`: each 32-quant
/// sub-block's five-bit quants (0..31) transposed so that lane i holds row i, and the rows'
/// `d·scale` multiplied out and the mins as `PackedQ4K` holds them.
#[repr(C)]
pub(super) struct PackedQ5K<V: RowLanes> {
    quants: [[V::Ints; 8]; 8],
    scales: [V::Floats; 8],
    mins: SubBlockMins<V>,
}
copy_pack!(PackedQ5K);

#[inline(always)]
unsafe fn pack_q5_k_8_rows<I: IsaPrimitives>(
    rows: &[&[BlockQ5K]],
    b: usize,
    packed: &mut PackedQ5K<Lanes8<I>>,
) {
    let m4 = _mm256_set1_epi8(0x0F);
    let blocks: [&BlockQ5K; 8] = std::array::from_fn(|i| rows[i].get_unchecked(b));
    let d = f16_lanes_8(&blocks, |x| x.d);
    let dmin = f16_lanes_8(&blocks, |x| x.dmin);
    let packed_scales = std::array::from_fn(|i| &blocks[i].scales);
    scales_mins_8_rows(d, dmin, packed_scales, &mut packed.scales, &mut packed.mins);
    for c in 0..4 {
        let mut low = [_mm256_setzero_si256(); 8];
        let mut high = [_mm256_setzero_si256(); 8];
        for i in 0..8 {
            let q4 = load(blocks[i].qs.as_ptr().add(32 * c));
            let qh = load(blocks[i].qh.as_ptr());
            low[i] = _mm256_or_si256(_mm256_and_si256(q4, m4), q5_k_fifth_bits(qh, 2 * c));
            high[i] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4),
                q5_k_fifth_bits(qh, 2 * c + 1),
            );
        }
        packed.quants[2 * c] = transpose_dwords(low);
        packed.quants[2 * c + 1] = transpose_dwords(high);
    }
}

/// Sub-block j's fifth bits of a Q5_K block's `qh`, as 16 in each byte where set: bit j of
/// each byte. A 16-bit shift carries the high byte's bits into the low byte's top, which the
/// mask of bit 0 drops.
#[inline(always)]
unsafe fn q5_k_fifth_bits(qh: __m256i, j: usize) -> __m256i {
    let shifted = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(j as i32));
    _mm256_slli_epi16::<4>(_mm256_and_si256(shifted, _mm256_set1_epi8(1)))
}

/// A block of rows packed one row per lane with eight 32-quant sub-blocks, each with a
/// scale and a min (`PackedQ4K`, `PackedQ5K`), for `tile_k_quant_rows_in_lanes`.
pub(super) trait PackedSubBlocks<V: RowLanes> {
    /// Quants 4k..4k+3 of sub-block j of every row, unsigned.
    unsafe fn quants(&self, j: usize, k: usize) -> V::Ints;
    fn scales(&self) -> &[V::Floats; 8];
    fn mins(&self) -> &SubBlockMins<V>;
}

impl<V: RowLanes> PackedSubBlocks<V> for PackedQ4K<V> {
    #[inline(always)]
    unsafe fn quants(&self, j: usize, k: usize) -> V::Ints {
        let both = self.quants[j / 2][k];
        if j.is_multiple_of(2) {
            V::low_nibbles(both)
        } else {
            V::high_nibbles(both)
        }
    }

    fn scales(&self) -> &[V::Floats; 8] {
        &self.scales
    }

    fn mins(&self) -> &SubBlockMins<V> {
        &self.mins
    }
}

impl<V: RowLanes> PackedSubBlocks<V> for PackedQ5K<V> {
    #[inline(always)]
    unsafe fn quants(&self, j: usize, k: usize) -> V::Ints {
        self.quants[j][k]
    }

    fn scales(&self) -> &[V::Floats; 8] {
        &self.scales
    }

    fn mins(&self) -> &SubBlockMins<V> {
        &self.mins
    }
}

/// Packed Q4_K or Q5_K rows against `T` activation rows, one row per lane, as the
/// 32-element formats' `tile_32_rows_in_lanes`: each 32-quant sub-block's row sums come out
/// of eight `vpdpbusd` in one register and are scaled by the rows' `d·scale`, shared by every
/// activation; the mins meet the activation's sub-block sums in integers, two sub-blocks
/// per multiply-add of words, and `dmin` scales their total. Returns, per activation, the
/// rows' sums. `sum_pairs[t][4b + k]` holds Σa over sub-blocks 2k and 2k + 1 of block b in
/// its low and high word (see `sum_pairs`).
#[inline(always)]
unsafe fn tile_k_quant_rows_in_lanes<V: RowLanes, P: PackedSubBlocks<V>, const T: usize>(
    packed: &[P],
    acts: [&[BlockQ8K]; T],
    sum_pairs: [&[i32]; T],
    max_quant: i32,
) -> [V::Floats; T] {
    let mut acc = [V::zero_floats(); T];
    for (b, p) in packed.iter().enumerate() {
        let mut sums = [V::zero_floats(); T];
        for t in 0..T {
            let pairs = sum_pairs[t].as_ptr().add(4 * b);
            sums[t] = less_mins(p.mins(), |k| *pairs.add(k), sums[t]);
        }
        for j in 0..8 {
            let w: [V::Ints; 8] = std::array::from_fn(|k| p.quants(j, k));
            let dots = V::dots::<T, 8>(
                [V::zero_ints(); T],
                &w,
                std::array::from_fn(|t| acts[t].get_unchecked(b).qs.as_ptr().add(32 * j)),
                max_quant,
            );
            for t in 0..T {
                sums[t] = V::mul_add(V::to_floats(dots[t]), p.scales()[j], sums[t]);
            }
        }
        for t in 0..T {
            let ad = V::splat_f32(acts[t].get_unchecked(b).d());
            acc[t] = V::mul_add(sums[t], ad, acc[t]);
        }
    }
    acc
}

/// Q6_K rows of one block laid out for `tile_q6_k_rows_in_lanes`: each 32-quant chunk
/// unpacked to six-bit values (0..63) and transposed so that lane i holds row i, and the
/// rows' `d·scale` per 16-quant sub-block multiplied out.
#[repr(C)]
pub(super) struct PackedQ6K<V: RowLanes> {
    quants: [[V::Ints; 8]; 8],
    scales: [V::Floats; 16],
}
copy_pack!(PackedQ6K);

/// Q2_K rows of one block as the rows-in-lanes tiles read them: `PackedQ6K`'s quants (0..3)
/// and `d·scale`, and the mins of sub-blocks 0-7 and 8-15.
#[repr(C)]
pub(super) struct PackedQ2K<V: RowLanes> {
    quants: [[V::Ints; 8]; 8],
    scales: [V::Floats; 16],
    mins: [SubBlockMins<V>; 2],
}
copy_pack!(PackedQ2K);

/// A block of rows packed one row per lane with sixteen 16-quant sub-blocks (`PackedQ6K`,
/// `PackedQ2K`), for `tile_q6_k_rows_in_lanes`.
pub(super) trait PackedSixteens<V: RowLanes>: Copy {
    /// Chunk c's quants 4k..4k+3 of every row in `[c][k]`, unsigned.
    fn quants(&self) -> &[[V::Ints; 8]; 8];
    fn scales(&self) -> &[V::Floats; 16];
    /// The mins of sub-blocks 0-7 and 8-15, for a format with mins.
    fn mins(&self) -> Option<&[SubBlockMins<V>; 2]>;
}

impl<V: RowLanes> PackedSixteens<V> for PackedQ6K<V> {
    fn quants(&self) -> &[[V::Ints; 8]; 8] {
        &self.quants
    }

    fn scales(&self) -> &[V::Floats; 16] {
        &self.scales
    }

    fn mins(&self) -> Option<&[SubBlockMins<V>; 2]> {
        None
    }
}

impl<V: RowLanes> PackedSixteens<V> for PackedQ2K<V> {
    fn quants(&self) -> &[[V::Ints; 8]; 8] {
        &self.quants
    }

    fn scales(&self) -> &[V::Floats; 16] {
        &self.scales
    }

    fn mins(&self) -> Option<&[SubBlockMins<V>; 2]> {
        Some(&self.mins)
    }
}

/// Packed Q6_K (or Q3_K, Q2_K) rows against `T` activation rows, one row per lane, as
/// `tile_k_quant_rows_in_lanes`: each 16-quant sub-block's row sums come out of four
/// `vpdpbusd` in one register, and the rows' `d·scale` scales them. The quants go in
/// unsigned (0..63, or 0..7); `starts[t][16b + s]` is −offset·Σa over sub-block s of block b
/// (`sub_block_starts`), which starts that sub-block's sum and so takes the offset back out.
/// Q2_K's mins meet the activation's sub-block sums once per block, as Q4_K's do.
#[inline(always)]
unsafe fn tile_q6_k_rows_in_lanes<V: RowLanes, P: PackedSixteens<V>, const T: usize>(
    packed: &[P],
    acts: [&[BlockQ8K]; T],
    starts: [&[i32]; T],
    max_quant: i32,
) -> [V::Floats; T] {
    let mut acc = [V::zero_floats(); T];
    for (b, p) in packed.iter().enumerate() {
        let mut sums = [V::zero_floats(); T];
        for (chunk, w) in p.quants().iter().enumerate() {
            for sub in 0..2 {
                let s_index = 2 * chunk + sub;
                let dots = V::dots::<T, 4>(
                    std::array::from_fn(|t| {
                        V::splat_i32(*starts[t].get_unchecked(16 * b + s_index))
                    }),
                    &w[4 * sub..],
                    std::array::from_fn(|t| acts[t].get_unchecked(b).qs.as_ptr().add(16 * s_index)),
                    max_quant,
                );
                for t in 0..T {
                    sums[t] = V::mul_add(V::to_floats(dots[t]), p.scales()[s_index], sums[t]);
                }
            }
        }
        if let Some(halves) = p.mins() {
            for t in 0..T {
                // The activation's sixteen-quant sums, two to an i32 as the block stores them.
                let bsums = acts[t].get_unchecked(b).bsums.as_ptr().cast::<i32>();
                for (h, mins) in halves.iter().enumerate() {
                    let pairs = |k: usize| bsums.add(4 * h + k).read_unaligned();
                    sums[t] = less_mins(mins, pairs, sums[t]);
                }
            }
        }
        for t in 0..T {
            let ad = V::splat_f32(acts[t].get_unchecked(b).d());
            acc[t] = V::mul_add(sums[t], ad, acc[t]);
        }
    }
    acc
}

/// Activation bytes an activation group may span, so that it stays in L2 while every
/// packed row group meets it: larger groups pack each row group fewer times.
const ACT_GROUP_BYTES: usize = 512 << 10;

/// The most rows a rows-in-lanes tile holds (sixteen f32 lanes of a 512-bit register).
const MAX_LANES: usize = 16;

/// A weight format's rows-in-lanes tiles, for `dot_tile_in_lanes`, written once for every
/// width of `RowLanes`: groups of as many rows as the lanes hold, each packed once per
/// activation group and met by `tile` several activations at a time.
pub(super) trait LaneFormat {
    type Weight: Block;
    type Act: Block;
    /// One block of a group of rows laid out for `tile`. Nothing but SIMD vectors: all zero
    /// bits is a value.
    type Packed<V: RowLanes>: Copy;
    /// What `tile` reads per activation block beside the quants, worked out once per matrix.
    type Extra: Copy;
    /// How many `Extra` values each activation block has.
    const EXTRA_PER_BLOCK: usize;
    /// The largest quant a pack holds (unsigned): how many byte products a 16-bit sum can
    /// take (`IsaPrimitives::run_len`).
    const MAX_QUANT: i32;
    /// The rows one `Weight` block holds: 1 for a plain format, where each row is a stripe of
    /// its own, or the rows of a grouped layout's stripe.
    const STRIPE_ROWS: usize = 1;

    fn extra(a: &Self::Act) -> impl Iterator<Item = Self::Extra>;

    /// Block b of eight rows (`8 / STRIPE_ROWS` stripes), packed into 256-bit lanes (wider
    /// packs join these).
    unsafe fn pack_8<I: IsaPrimitives>(
        stripes: &[&[Self::Weight]],
        b: usize,
        packed: &mut Self::Packed<Lanes8<I>>,
    );

    /// The sums of the packed rows with each of `T` activations; `extra[t]` holds
    /// `EXTRA_PER_BLOCK` values per block of `acts[t]`.
    unsafe fn tile<V: RowLanes, const T: usize>(
        packed: &[Self::Packed<V>],
        acts: [&[Self::Act]; T],
        extra: [&[Self::Extra]; T],
    ) -> [V::Floats; T];

    /// Row-by-row (stripe-by-stripe) products: the rows after the last group, and every row
    /// of a batch of fewer activations than one tile. Activation t's sums go to
    /// `out[t * out_stride..]`.
    unsafe fn tail<I: IsaPrimitives>(
        rows: &[u8],
        row_bytes: usize,
        acts: &[u8],
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    );
}

/// Batched products with the rows in the lanes (a `DotTileFn`): `F`'s rows in groups of
/// `V::LANES` against `ACTS` activations at a time, the activations in groups that stay in
/// L2 while every row group is packed once for them and meets them.
#[inline(always)]
pub(super) unsafe fn dot_tile_in_lanes<
    I: IsaPrimitives,
    F: LaneFormat,
    V: RowLanes,
    const ACTS: usize,
>(
    rows: &[u8],
    row_bytes: usize,
    acts: &[u8],
    n_acts: usize,
    out: &mut [f32],
) {
    const { assert!(V::LANES <= MAX_LANES) };
    let n_rows = rows.len() / row_bytes;
    // Fewer activations than one tile (generation, a token from each of a few sequences):
    // packing would cost more than the tiles save. The row-by-row tiles unpack each block
    // once for all of them.
    if n_acts < ACTS {
        F::tail::<I>(rows, row_bytes, acts, n_acts, out, n_rows);
        return;
    }
    let act_bytes = acts.len() / n_acts;
    let n_blocks = act_bytes / size_of::<F::Act>();
    const { assert!(8 % F::STRIPE_ROWS == 0) };
    let extra: Vec<F::Extra> = as_blocks::<F::Act>(acts)
        .iter()
        .flat_map(F::extra)
        .collect();
    let stripe_bytes = row_bytes * F::STRIPE_ROWS;
    let stripe = |r: usize| {
        let at = r / F::STRIPE_ROWS * stripe_bytes;
        as_blocks::<F::Weight>(&rows[at..at + stripe_bytes])
    };
    let act = |t: usize| as_blocks::<F::Act>(&acts[t * act_bytes..(t + 1) * act_bytes]);
    let per_act = F::EXTRA_PER_BLOCK * n_blocks;
    let extra_of = |t: usize| &extra[t * per_act..(t + 1) * per_act];
    let store = |sums: &[V::Floats], out: &mut [f32], t0: usize, r0: usize| {
        for (t, sums) in sums.iter().enumerate() {
            let at = (t0 + t) * n_rows + r0;
            V::store(out[at..at + V::LANES].as_mut_ptr(), *sums);
        }
    };
    let full_rows = n_rows / V::LANES * V::LANES;
    let act_group = (ACT_GROUP_BYTES / act_bytes / ACTS).max(1) * ACTS;
    let mut packed: Vec<F::Packed<V>> = vec![std::mem::zeroed(); n_blocks];
    let mut group_stripes: [&[F::Weight]; MAX_LANES] = [&[]; MAX_LANES];
    let group_stripes = &mut group_stripes[..V::LANES / F::STRIPE_ROWS];
    for group in (0..n_acts).step_by(act_group) {
        let group_end = (group + act_group).min(n_acts);
        for r0 in (0..full_rows).step_by(V::LANES) {
            for (i, s) in group_stripes.iter_mut().enumerate() {
                *s = stripe(r0 + i * F::STRIPE_ROWS);
            }
            for (b, p) in packed.iter_mut().enumerate() {
                V::pack::<F>(group_stripes, b, p);
            }
            let mut t0 = group;
            while t0 + ACTS <= group_end {
                let acts = std::array::from_fn(|i| act(t0 + i));
                let sums =
                    F::tile::<V, ACTS>(&packed, acts, std::array::from_fn(|i| extra_of(t0 + i)));
                store(&sums, out, t0, r0);
                t0 += ACTS;
            }
            for t0 in t0..group_end {
                store(
                    &F::tile::<V, 1>(&packed, [act(t0)], [extra_of(t0)]),
                    out,
                    t0,
                    r0,
                );
            }
        }
    }
    if full_rows < n_rows {
        F::tail::<I>(
            &rows[full_rows * row_bytes..],
            row_bytes,
            acts,
            n_acts,
            &mut out[full_rows..],
            n_rows,
        );
    }
}

/// The i16 scale of sub-block 2k in every lane of the low 128 bits and of sub-block 2k + 1 in
/// the high, from sixteen i16 scales as `scale_halves` lays them out in `low` and `high`: the
/// scales of one 32-quant register's `maddubs` pairs.
#[inline(always)]
unsafe fn sub_block_pair_scales(low: __m256i, high: __m256i, k: usize) -> __m256i {
    let source = if k < 4 { low } else { high };
    let word = |j: usize| (((2 * j + 1) << 8) | (2 * j)) as i16;
    let (first, second) = (word(2 * k % 8), word((2 * k + 1) % 8));
    _mm256_shuffle_epi8(
        source,
        _mm256_set_m128i(_mm_set1_epi16(second), _mm_set1_epi16(first)),
    )
}

/// Sixteen i16 scales as `sub_block_pair_scales` reads them: the low eight in both 128-bit
/// halves of the first vector, the high eight in both halves of the second.
#[inline(always)]
unsafe fn scale_halves(scales: __m256i) -> (__m256i, __m256i) {
    (
        _mm256_permute2x128_si256::<0x00>(scales, scales),
        _mm256_permute2x128_si256::<0x11>(scales, scales),
    )
}

/// One Q2_K row × `T` activation rows: the quants (0..3) of each 32-element register meet
/// the activation with `maddubs`, the pairs' sums take their sub-blocks' 4-bit scales with
/// `madd`, and the mins' share is the activation's 16-element sums times the 4-bit mins.
#[inline(always)]
unsafe fn tile_q2_k<I: IsaPrimitives, const T: usize>(
    x: &[BlockQ2K],
    y: [&[BlockQ8K]; T],
) -> [f32; T] {
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, xb) in x.iter().enumerate() {
        if T == 1 {
            prefetch_ahead::<I, _>(xb);
        }
        let (xd, xdmin) = halves(xb.d, xb.dmin);
        let packed = _mm_loadu_si128(xb.scales.as_ptr().cast());
        let scales = _mm256_cvtepu8_epi16(_mm_and_si128(packed, m4));
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), m4));
        let (low, high) = scale_halves(scales);
        let mut quants = [_mm256_setzero_si256(); 8];
        for h in 0..2 {
            let q = load(xb.qs.as_ptr().add(32 * h));
            for j in 0..4 {
                let shifted = _mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j as i32));
                quants[4 * h + j] = _mm256_and_si256(shifted, m3);
            }
        }
        for t in 0..T {
            let yb = y[t].get_unchecked(b);
            let mut sumi = _mm256_setzero_si256();
            for (k, q) in quants.iter().enumerate() {
                let p = _mm256_maddubs_epi16(*q, load(yb.qs.as_ptr().add(32 * k).cast()));
                sumi = I::madd_acc(sumi, p, sub_block_pair_scales(low, high, k));
            }
            let min_sums = _mm256_madd_epi16(mins, load(yb.bsums.as_ptr()));
            acc[t] = _mm256_fmadd_ps(
                _mm256_set1_ps(xd * yb.d()),
                _mm256_cvtepi32_ps(sumi),
                acc[t],
            );
            acc[t] = _mm256_fnmadd_ps(
                _mm256_set1_ps(xdmin * yb.d()),
                _mm256_cvtepi32_ps(min_sums),
                acc[t],
            );
        }
    }
    std::array::from_fn(|t| hsum_ps(acc[t]))
}

/// One Q3_K row × `T` activation rows: the quants go into `maddubs` unsigned (0..7, the third
/// bit from `hmask` beside the low two), and their offset of 4 comes off once per block as
/// 4·Σ scale·(16-element activation sum), as `dot_q6_k` takes its 32.
#[inline(always)]
unsafe fn tile_q3_k<I: IsaPrimitives, const T: usize>(
    x: &[BlockQ3K],
    y: [&[BlockQ8K]; T],
) -> [f32; T] {
    let m3 = _mm256_set1_epi8(3);
    let one = _mm256_set1_epi8(1);
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, xb) in x.iter().enumerate() {
        if T == 1 {
            prefetch_ahead::<I, _>(xb);
        }
        let xd = halves(xb.d, xb.d).0;
        let [s0, s1, s2, s3] = crate::q3_k::scale_words(&xb.scales);
        let six_bit = _mm_set_epi32(s3 as i32, s2 as i32, s1 as i32, s0 as i32);
        let scales = _mm256_cvtepi8_epi16(_mm_sub_epi8(six_bit, _mm_set1_epi8(32)));
        let (low, high) = scale_halves(scales);
        let mut quants = [_mm256_setzero_si256(); 8];
        // Bit 4h + j of each hmask byte is the third bit of register 4h + j's quants; shifting
        // by one per register keeps the next at bit 0 (a 16-bit shift carries the high byte's
        // bit into the low byte's top, which the mask drops).
        let mut third = load(xb.hmask.as_ptr());
        for h in 0..2 {
            let q = load(xb.qs.as_ptr().add(32 * h));
            for j in 0..4 {
                let shifted = _mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j as i32));
                quants[4 * h + j] = _mm256_or_si256(
                    _mm256_and_si256(shifted, m3),
                    _mm256_slli_epi16::<2>(_mm256_and_si256(third, one)),
                );
                third = _mm256_srli_epi16::<1>(third);
            }
        }
        for t in 0..T {
            let yb = y[t].get_unchecked(b);
            let offset = _mm256_slli_epi32::<2>(_mm256_madd_epi16(scales, load(yb.bsums.as_ptr())));
            let mut sumi = _mm256_setzero_si256();
            for (k, q) in quants.iter().enumerate() {
                let p = _mm256_maddubs_epi16(*q, load(yb.qs.as_ptr().add(32 * k).cast()));
                sumi = I::madd_acc(sumi, p, sub_block_pair_scales(low, high, k));
            }
            let sumi = _mm256_sub_epi32(sumi, offset);
            acc[t] = _mm256_fmadd_ps(
                _mm256_set1_ps(xd * yb.d()),
                _mm256_cvtepi32_ps(sumi),
                acc[t],
            );
        }
    }
    std::array::from_fn(|t| hsum_ps(acc[t]))
}

/// A format whose rows go one at a time against up to four activations.
pub(super) trait RowTile: Block + Sized {
    type Act: Block;
    unsafe fn tile<I: IsaPrimitives, const T: usize>(x: &[Self], y: [&[Self::Act]; T]) -> [f32; T];
}

impl RowTile for BlockQ2K {
    type Act = BlockQ8K;
    #[inline(always)]
    unsafe fn tile<I: IsaPrimitives, const T: usize>(x: &[Self], y: [&[BlockQ8K]; T]) -> [f32; T] {
        tile_q2_k::<I, T>(x, y)
    }
}

impl RowTile for BlockQ3K {
    type Act = BlockQ8K;
    #[inline(always)]
    unsafe fn tile<I: IsaPrimitives, const T: usize>(x: &[Self], y: [&[BlockQ8K]; T]) -> [f32; T] {
        tile_q3_k::<I, T>(x, y)
    }
}

impl RowTile for BlockQ4K {
    type Act = BlockQ8K;
    #[inline(always)]
    unsafe fn tile<I: IsaPrimitives, const T: usize>(x: &[Self], y: [&[BlockQ8K]; T]) -> [f32; T] {
        tile_k_quant_row::<I, Self, T>(x, y)
    }
}

impl RowTile for BlockQ5K {
    type Act = BlockQ8K;
    #[inline(always)]
    unsafe fn tile<I: IsaPrimitives, const T: usize>(x: &[Self], y: [&[BlockQ8K]; T]) -> [f32; T] {
        tile_k_quant_row::<I, Self, T>(x, y)
    }
}

impl<F: QuantsWithMin> RowTile for F {
    type Act = BlockQ8_1;
    #[inline(always)]
    unsafe fn tile<I: IsaPrimitives, const T: usize>(x: &[F], y: [&[BlockQ8_1]; T]) -> [f32; T] {
        dot_with_min::<I, F, T>(x, y)
    }
}

impl RowTile for BlockQ6K {
    type Act = BlockQ8K;
    #[inline(always)]
    unsafe fn tile<I: IsaPrimitives, const T: usize>(x: &[Self], y: [&[BlockQ8K]; T]) -> [f32; T] {
        tile_q6_k::<I, T>(x, y)
    }
}

/// Rows one at a time against up to four activations (`LaneFormat::tail`).
#[inline(always)]
unsafe fn tail_by_rows<I: IsaPrimitives, W: RowTile>(
    rows: &[u8],
    row_bytes: usize,
    acts: &[u8],
    n_acts: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let act_bytes = acts.len() / n_acts;
    let act = |t: usize| as_blocks::<W::Act>(&acts[t * act_bytes..(t + 1) * act_bytes]);
    for (r, x) in rows.chunks_exact(row_bytes).enumerate() {
        let x = as_blocks::<W>(x);
        let mut t0 = 0;
        // The last one to three activations share one pass over the row too: a few
        // sequences generating together are often fewer than four.
        while t0 < n_acts {
            let n = (n_acts - t0).min(4);
            let acts = |i: usize| act(t0 + i);
            let mut store = |sums: &[f32]| {
                for (i, sum) in sums.iter().enumerate() {
                    out[(t0 + i) * out_stride + r] = *sum;
                }
            };
            match n {
                1 => store(&W::tile::<I, 1>(x, [acts(0)])),
                2 => store(&W::tile::<I, 2>(x, std::array::from_fn(acts))),
                3 => store(&W::tile::<I, 3>(x, std::array::from_fn(acts))),
                _ => store(&W::tile::<I, 4>(x, std::array::from_fn(acts))),
            }
            t0 += n;
        }
    }
}

/// Σa over each 32-quant sub-block of a Q8_K block, as Q4_K's mins want it: sub-blocks 2k
/// and 2k + 1 in the low and high i16 word of value k.
fn sum_pairs(a: &BlockQ8K) -> impl Iterator<Item = i32> + '_ {
    // Each sum of 32 quants of at most 128 in magnitude fits in an i16.
    let sum = move |j: usize| i32::from(a.bsum(2 * j)) + i32::from(a.bsum(2 * j + 1));
    (0..4).map(move |k| (sum(2 * k) & 0xFFFF) | (sum(2 * k + 1) << 16))
}

/// −offset·Σa over each 16-quant sub-block of a Q8_K block, for a format whose unsigned quants
/// stand for q − offset (Q6_K 32, Q3_K 4).
fn sub_block_starts(a: &BlockQ8K, offset: i32) -> impl Iterator<Item = i32> + '_ {
    (0..16).map(move |s| -offset * i32::from(a.bsum(s)))
}

impl LaneFormat for BlockQ4K {
    type Weight = BlockQ4K;
    type Act = BlockQ8K;
    type Packed<V: RowLanes> = PackedQ4K<V>;
    type Extra = i32;
    const EXTRA_PER_BLOCK: usize = 4;
    const MAX_QUANT: i32 = 15;

    fn extra(a: &BlockQ8K) -> impl Iterator<Item = i32> {
        sum_pairs(a)
    }

    #[inline(always)]
    unsafe fn pack_8<I: IsaPrimitives>(
        rows: &[&[BlockQ4K]],
        b: usize,
        packed: &mut PackedQ4K<Lanes8<I>>,
    ) {
        pack_q4_k_8_rows(rows, b, packed)
    }

    #[inline(always)]
    unsafe fn tile<V: RowLanes, const T: usize>(
        packed: &[PackedQ4K<V>],
        acts: [&[BlockQ8K]; T],
        extra: [&[i32]; T],
    ) -> [V::Floats; T] {
        tile_k_quant_rows_in_lanes::<V, _, T>(packed, acts, extra, Self::MAX_QUANT)
    }

    #[inline(always)]
    unsafe fn tail<I: IsaPrimitives>(
        rows: &[u8],
        row_bytes: usize,
        acts: &[u8],
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        tail_by_rows::<I, BlockQ4K>(rows, row_bytes, acts, n_acts, out, out_stride)
    }
}

impl LaneFormat for BlockQ5K {
    type Weight = BlockQ5K;
    type Act = BlockQ8K;
    type Packed<V: RowLanes> = PackedQ5K<V>;
    type Extra = i32;
    const EXTRA_PER_BLOCK: usize = 4;
    const MAX_QUANT: i32 = 31;

    fn extra(a: &BlockQ8K) -> impl Iterator<Item = i32> {
        sum_pairs(a)
    }

    #[inline(always)]
    unsafe fn pack_8<I: IsaPrimitives>(
        rows: &[&[BlockQ5K]],
        b: usize,
        packed: &mut PackedQ5K<Lanes8<I>>,
    ) {
        pack_q5_k_8_rows(rows, b, packed)
    }

    #[inline(always)]
    unsafe fn tile<V: RowLanes, const T: usize>(
        packed: &[PackedQ5K<V>],
        acts: [&[BlockQ8K]; T],
        extra: [&[i32]; T],
    ) -> [V::Floats; T] {
        tile_k_quant_rows_in_lanes::<V, _, T>(packed, acts, extra, Self::MAX_QUANT)
    }

    #[inline(always)]
    unsafe fn tail<I: IsaPrimitives>(
        rows: &[u8],
        row_bytes: usize,
        acts: &[u8],
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        tail_by_rows::<I, BlockQ5K>(rows, row_bytes, acts, n_acts, out, out_stride)
    }
}

/// Eight rows' sixteen signed 8-bit sub-block scales (one row per register) as `d·scale` per
/// sub-block, one row per lane, as `PackedQ6K` holds them for Q6_K and Q3_K.
#[inline(always)]
unsafe fn sixteen_scales_8_rows(scales: [__m128i; 8], d: __m256, out: &mut [__m256; 16]) {
    let low = transpose_words(scales.map(|s| _mm_cvtepi8_epi16(s)));
    let high = transpose_words(scales.map(|s| _mm_cvtepi8_epi16(_mm_unpackhi_epi64(s, s))));
    for j in 0..8 {
        out[j] = per_row(low[j], d);
        out[8 + j] = per_row(high[j], d);
    }
}

/// A K-quant of 16-element sub-blocks whose unsigned quants stand for q − `OFFSET` (Q6_K,
/// Q3_K; Q2_K with mins instead), as the rows-in-lanes tiles read it.
pub(super) trait SubBlocks16: RowTile<Act = BlockQ8K> {
    const OFFSET: i32;
    /// The largest quant its packs hold, unsigned.
    const MAX_QUANT: i32;
    type Packed<V: RowLanes>: PackedSixteens<V>;
    unsafe fn pack_8<I: IsaPrimitives>(
        rows: &[&[Self]],
        b: usize,
        packed: &mut Self::Packed<Lanes8<I>>,
    );
}

impl SubBlocks16 for BlockQ2K {
    const OFFSET: i32 = 0;
    const MAX_QUANT: i32 = 3;
    type Packed<V: RowLanes> = PackedQ2K<V>;
    /// Q2_K rows of one block as `PackedQ2K`: chunk 4h + j is bits 2j..2j+1 of half h's `qs`.
    #[inline(always)]
    unsafe fn pack_8<I: IsaPrimitives>(
        rows: &[&[Self]],
        b: usize,
        packed: &mut PackedQ2K<Lanes8<I>>,
    ) {
        let m3 = _mm256_set1_epi8(3);
        let m4 = _mm_set1_epi8(0x0F);
        let blocks: [&BlockQ2K; 8] = std::array::from_fn(|i| rows[i].get_unchecked(b));
        let d = f16_lanes_8(&blocks, |x| x.d);
        let dmin = f16_lanes_8(&blocks, |x| x.dmin);
        let mut scales = [[_mm_setzero_si128(); 8]; 2];
        let mut mins = [[_mm_setzero_si128(); 8]; 2];
        for i in 0..8 {
            let packed_scales = _mm_loadu_si128(blocks[i].scales.as_ptr().cast());
            let (sc, m) = (
                _mm_and_si128(packed_scales, m4),
                _mm_and_si128(_mm_srli_epi16::<4>(packed_scales), m4),
            );
            scales[0][i] = _mm_cvtepu8_epi16(sc);
            scales[1][i] = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(sc, sc));
            mins[0][i] = _mm_cvtepu8_epi16(m);
            mins[1][i] = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(m, m));
        }
        for half in 0..2 {
            let sc = transpose_words(scales[half]);
            for (to, sc) in packed.scales[8 * half..8 * half + 8].iter_mut().zip(sc) {
                *to = per_row(sc, d);
            }
            packed.mins[half] = sub_block_mins(transpose_words(mins[half]), dmin);
        }
        for chunk in 0..8 {
            let (h, j) = (chunk / 4, chunk % 4);
            let shift = _mm_cvtsi32_si128(2 * j as i32);
            let mut quants = [_mm256_setzero_si256(); 8];
            for (i, q) in quants.iter_mut().enumerate() {
                let two = _mm256_srl_epi16(load(blocks[i].qs.as_ptr().add(32 * h)), shift);
                *q = _mm256_and_si256(two, m3);
            }
            packed.quants[chunk] = transpose_dwords(quants);
        }
    }
}

impl SubBlocks16 for BlockQ3K {
    const OFFSET: i32 = 4;
    const MAX_QUANT: i32 = 7;
    type Packed<V: RowLanes> = PackedQ6K<V>;
    /// Q3_K rows of one block as `PackedQ6K` holds Q6_K's: the quants unsigned (0..7) in element
    /// order, the rows' `d·(scale − 32)` per sub-block.
    #[inline(always)]
    unsafe fn pack_8<I: IsaPrimitives>(
        rows: &[&[Self]],
        b: usize,
        packed: &mut PackedQ6K<Lanes8<I>>,
    ) {
        let m3 = _mm256_set1_epi8(3);
        let one = _mm256_set1_epi8(1);
        let blocks: [&BlockQ3K; 8] = std::array::from_fn(|i| rows[i].get_unchecked(b));
        let d = f16_lanes_8(&blocks, |x| x.d);
        let scales = blocks.map(|x| {
            let [s0, s1, s2, s3] = crate::q3_k::scale_words(&x.scales);
            let six_bit = _mm_set_epi32(s3 as i32, s2 as i32, s1 as i32, s0 as i32);
            _mm_sub_epi8(six_bit, _mm_set1_epi8(32))
        });
        sixteen_scales_8_rows(scales, d, &mut packed.scales);
        // Chunk 4h + j: bits 2j..2j+1 of half h's `qs`, and bit 4h + j of each `hmask` byte.
        for chunk in 0..8 {
            let (h, j) = (chunk / 4, chunk % 4);
            let two_shift = _mm_cvtsi32_si128(2 * j as i32);
            let third_shift = _mm_cvtsi32_si128(chunk as i32);
            let mut quants = [_mm256_setzero_si256(); 8];
            for (i, q) in quants.iter_mut().enumerate() {
                let two = _mm256_srl_epi16(load(blocks[i].qs.as_ptr().add(32 * h)), two_shift);
                let third = _mm256_srl_epi16(load(blocks[i].hmask.as_ptr()), third_shift);
                *q = _mm256_or_si256(
                    _mm256_and_si256(two, m3),
                    _mm256_slli_epi16::<2>(_mm256_and_si256(third, one)),
                );
            }
            packed.quants[chunk] = transpose_dwords(quants);
        }
    }
}

impl SubBlocks16 for BlockQ6K {
    const OFFSET: i32 = 32;
    const MAX_QUANT: i32 = 63;
    type Packed<V: RowLanes> = PackedQ6K<V>;
    #[inline(always)]
    unsafe fn pack_8<I: IsaPrimitives>(
        rows: &[&[Self]],
        b: usize,
        packed: &mut PackedQ6K<Lanes8<I>>,
    ) {
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(0x30);
        let blocks: [&BlockQ6K; 8] = std::array::from_fn(|i| rows[i].get_unchecked(b));
        let d = f16_lanes_8(&blocks, |x| x.d);
        let scales = blocks.map(|x| _mm_loadu_si128(x.scales.as_ptr().cast()));
        sixteen_scales_8_rows(scales, d, &mut packed.scales);
        // Chunk c of 32 quants (c4 = c mod 4 within its half of 128) takes its low four
        // bits from nibble c4 / 2 of `ql`'s 32-byte stretch c4 mod 2, and its high two
        // from bits 2·c4..2·c4+1 of each `qh` byte, shifted here to bits 4-5.
        for chunk in 0..8 {
            let (half, c4) = (chunk / 4, chunk % 4);
            let nibble_shift = _mm_cvtsi32_si128(4 * (c4 / 2) as i32);
            let high_shift = _mm_cvtsi32_si128(2 * c4 as i32);
            let mut quants = [_mm256_setzero_si256(); 8];
            for (i, q) in quants.iter_mut().enumerate() {
                let ql = load(blocks[i].ql.as_ptr().add(64 * half + 32 * (c4 % 2)));
                let qh = load(blocks[i].qh.as_ptr().add(32 * half));
                let low = _mm256_and_si256(_mm256_srl_epi16(ql, nibble_shift), m4);
                let high = _mm256_slli_epi16::<4>(_mm256_srl_epi16(qh, high_shift));
                *q = _mm256_or_si256(low, _mm256_and_si256(high, m2));
            }
            packed.quants[chunk] = transpose_dwords(quants);
        }
    }
}

/// A `SubBlocks16` format as the rows-in-lanes kernels read it.
pub(super) struct SubBlockLanes<F>(std::marker::PhantomData<F>);

impl<F: SubBlocks16> LaneFormat for SubBlockLanes<F> {
    type Weight = F;
    type Act = BlockQ8K;
    type Packed<V: RowLanes> = F::Packed<V>;
    type Extra = i32;
    const EXTRA_PER_BLOCK: usize = 16;
    const MAX_QUANT: i32 = F::MAX_QUANT;

    fn extra(a: &BlockQ8K) -> impl Iterator<Item = i32> {
        sub_block_starts(a, F::OFFSET)
    }

    #[inline(always)]
    unsafe fn pack_8<I: IsaPrimitives>(rows: &[&[F]], b: usize, packed: &mut F::Packed<Lanes8<I>>) {
        F::pack_8(rows, b, packed)
    }

    #[inline(always)]
    unsafe fn tile<V: RowLanes, const T: usize>(
        packed: &[F::Packed<V>],
        acts: [&[BlockQ8K]; T],
        extra: [&[i32]; T],
    ) -> [V::Floats; T] {
        tile_q6_k_rows_in_lanes::<V, _, T>(packed, acts, extra, Self::MAX_QUANT)
    }

    #[inline(always)]
    unsafe fn tail<I: IsaPrimitives>(
        rows: &[u8],
        row_bytes: usize,
        acts: &[u8],
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        tail_by_rows::<I, F>(rows, row_bytes, acts, n_acts, out, out_stride)
    }
}

/// The eight rows' scales and mins of a Q4_K group block, one row per 32-bit lane: byte j
/// of lane r of the first vector is row r's scale of sub-block j, of the second its scale of
/// sub-block 4 + j; the third and fourth hold the mins alike. `unpack_scales_mins` for all
/// eight rows at once.
#[inline(always)]
unsafe fn scales_mins_in_lanes(words: &[[[u8; 4]; 8]; 3]) -> [__m256i; 4] {
    let word = |w: usize| load(words[w].as_ptr().cast());
    let (s0, s1, s2) = (word(0), word(1), word(2));
    let low6 = _mm256_set1_epi8(0x3F);
    let m4 = _mm256_set1_epi8(0x0F);
    let bits_4_5 = _mm256_set1_epi8(0x30);
    // Shifting 16-bit lanes carries bits across bytes; the masks drop them.
    let top_two = |w: __m256i| _mm256_and_si256(_mm256_srli_epi16::<2>(w), bits_4_5);
    [
        _mm256_and_si256(s0, low6),
        _mm256_or_si256(_mm256_and_si256(s2, m4), top_two(s0)),
        _mm256_and_si256(s1, low6),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(s2), m4),
            top_two(s1),
        ),
    ]
}

/// Sub-block j's byte of each lane of `scales_mins_in_lanes`' pair of vectors `[low, high]`
/// (j < 4 from `low`, 4 + j from `high`), as an i32.
#[inline(always)]
unsafe fn sub_block_lanes(pair: [__m256i; 2], j: usize) -> __m256i {
    let v = pair[j / 4];
    let byte = _mm256_set1_epi32(0xFF);
    match j % 4 {
        0 => _mm256_and_si256(v, byte),
        1 => _mm256_and_si256(_mm256_srli_epi32::<8>(v), byte),
        2 => _mm256_and_si256(_mm256_srli_epi32::<16>(v), byte),
        _ => _mm256_srli_epi32::<24>(v),
    }
}

/// The mins' share of one Q4_K group block against one activation block: each row's six-bit
/// mins times the activation's 32-quant sums, one row per lane. The sums are split as
/// `64·high + low` so that both parts are bytes and one `vpdpbusd` takes four sub-blocks of
/// every row.
#[inline(always)]
unsafe fn group_q4_k_mins<I: IsaPrimitives>(
    min_low: __m256i,
    min_high: __m256i,
    yb: &BlockQ8K,
) -> __m256i {
    let bsums = load(yb.bsums.as_ptr());
    let pair_sums = _mm_hadd_epi16(
        _mm256_castsi256_si128(bsums),
        _mm256_extracti128_si256::<1>(bsums),
    );
    let split = _mm_packs_epi16(
        _mm_srai_epi16::<6>(pair_sums),
        _mm_and_si128(pair_sums, _mm_set1_epi16(63)),
    );
    // Four sub-blocks' high bytes in each of words 0 and 1, their low bytes in 2 and 3.
    let split: [i32; 4] = std::mem::transmute(split);
    let part = |i: usize| _mm256_set1_epi32(split[i]);
    let mut highs = I::dot_u8_i8(_mm256_setzero_si256(), min_low, part(0));
    highs = I::dot_u8_i8(highs, min_high, part(1));
    let mins = I::dot_u8_i8(_mm256_slli_epi32::<6>(highs), min_low, part(2));
    I::dot_u8_i8(mins, min_high, part(3))
}

/// A grouped K-quant format with Q4_K's scales and mins (`BlockQ4KGroup`, `BlockQ5KGroup`).
pub(super) trait GroupedKQuant: Block {
    /// The largest of `quants`.
    const MAX_QUANT: i32;
    fn head(&self) -> &KQuantGroupHead;

    /// Quants 4k..4k+3 of sub-blocks 2c and 2c + 1 of every row, unsigned, one row per lane.
    unsafe fn quants<I: IsaPrimitives>(&self, c: usize, k: usize) -> (__m256i, __m256i);

    /// The block as the prompt tiles read it (`PackedQ4K`, `PackedQ5K`).
    type Packed<V: RowLanes>: PackedSubBlocks<V> + Copy;

    /// No transposes: the group is already one row per lane.
    unsafe fn pack<I: IsaPrimitives>(&self, packed: &mut Self::Packed<Lanes8<I>>);
}

/// Four bytes of every row's `qs` split into the quants of sub-blocks 2c (low nibbles) and
/// 2c + 1 (high nibbles).
#[inline(always)]
unsafe fn k_quant_nibbles(words: &[[u8; 4]; 8]) -> (__m256i, __m256i) {
    let q = load(words.as_ptr().cast());
    let m4 = _mm256_set1_epi8(0x0F);
    (
        _mm256_and_si256(q, m4),
        _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4),
    )
}

impl GroupedKQuant for BlockQ4KGroup {
    const MAX_QUANT: i32 = 15;
    fn head(&self) -> &KQuantGroupHead {
        &self.head
    }

    #[inline(always)]
    unsafe fn quants<I: IsaPrimitives>(&self, c: usize, k: usize) -> (__m256i, __m256i) {
        k_quant_nibbles(&self.qs[8 * c + k])
    }

    type Packed<V: RowLanes> = PackedQ4K<V>;

    #[inline(always)]
    unsafe fn pack<I: IsaPrimitives>(&self, packed: &mut PackedQ4K<Lanes8<I>>) {
        group_scales_mins(&self.head, &mut packed.scales, &mut packed.mins);
        for (c, quants) in packed.quants.iter_mut().enumerate() {
            for (k, q) in quants.iter_mut().enumerate() {
                *q = load(self.qs[8 * c + k].as_ptr().cast());
            }
        }
    }
}

/// Q4_K's nibbles with their fifth bits: 0..31.
impl GroupedKQuant for BlockQ5KGroup {
    const MAX_QUANT: i32 = 31;
    fn head(&self) -> &KQuantGroupHead {
        &self.head
    }

    #[inline(always)]
    unsafe fn quants<I: IsaPrimitives>(&self, c: usize, k: usize) -> (__m256i, __m256i) {
        let (low, high) = k_quant_nibbles(&self.qs[8 * c + k]);
        // Bits 2c and 2c + 1 of each byte of qh moved to bits 0 and 1; a 16-bit shift carries
        // the high byte's bits into the low byte's top, which the masks drop.
        let qh = load(self.qh[k].as_ptr().cast());
        let qh = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c as i32));
        let fifth = |bit: i8| _mm256_and_si256(qh, _mm256_set1_epi8(bit));
        (
            _mm256_or_si256(low, _mm256_slli_epi16::<4>(fifth(1))),
            _mm256_or_si256(high, _mm256_slli_epi16::<3>(fifth(2))),
        )
    }

    type Packed<V: RowLanes> = PackedQ5K<V>;

    #[inline(always)]
    unsafe fn pack<I: IsaPrimitives>(&self, packed: &mut PackedQ5K<Lanes8<I>>) {
        group_scales_mins(&self.head, &mut packed.scales, &mut packed.mins);
        for c in 0..4 {
            for k in 0..8 {
                (packed.quants[2 * c][k], packed.quants[2 * c + 1][k]) = self.quants::<I>(c, k);
            }
        }
    }
}

/// One Q4_K or Q5_K group stripe (eight rows) against `T` activation rows: each activation's sums,
/// one row per lane, each broadcast of four activation bytes meeting all eight rows in one
/// `vpdpbusd`. A row-by-row kernel spends a shuffle and a multiply-add per 32 quants on the
/// scales and a horizontal sum per row; here the scales multiply eight rows' integer sums
/// at once. The quants are unpacked once for all `T` activations, and each activation's
/// sums are bit for bit what it gets alone.
#[inline(always)]
unsafe fn dot_group_k_quant<I: IsaPrimitives, G: GroupedKQuant, const T: usize>(
    x: &[G],
    y: [&[BlockQ8K]; T],
) -> [__m256; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, xb) in x.iter().enumerate() {
        prefetch_ahead::<I, _>(xb);
        let yb: [&BlockQ8K; T] = std::array::from_fn(|t| y[t].get_unchecked(b));
        let [sc_low, sc_high, min_low, min_high] = scales_mins_in_lanes(&xb.head().scales);
        let scales: [__m256i; 8] =
            std::array::from_fn(|j| I::run_scale(sub_block_lanes([sc_low, sc_high], j)));
        let run = I::run_len(G::MAX_QUANT);
        let mut sums = [_mm256_setzero_si256(); T];
        for c in 0..4 {
            for first in (0..8).step_by(run) {
                let mut low = [_mm256_setzero_si256(); T];
                let mut high = [_mm256_setzero_si256(); T];
                for k in (first..8).take(run) {
                    let (q_low, q_high) = xb.quants::<I>(c, k);
                    for t in 0..T {
                        let a = yb[t].qs.as_ptr().add(64 * c);
                        let four =
                            |at: usize| _mm256_set1_epi32(a.add(at).cast::<i32>().read_unaligned());
                        low[t] = I::add_run_products(low[t], q_low, four(4 * k));
                        high[t] = I::add_run_products(high[t], q_high, four(32 + 4 * k));
                    }
                }
                for t in 0..T {
                    sums[t] = I::add_scaled_run(sums[t], low[t], scales[2 * c]);
                    sums[t] = I::add_scaled_run(sums[t], high[t], scales[2 * c + 1]);
                }
            }
        }
        let (d, dmin) = (f16_per_row(&xb.head().d), f16_per_row(&xb.head().dmin));
        for t in 0..T {
            let mins = group_q4_k_mins::<I>(min_low, min_high, yb[t]);
            let yd = _mm256_set1_ps(yb[t].d());
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, yd), _mm256_cvtepi32_ps(sums[t]), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, yd), _mm256_cvtepi32_ps(mins), acc[t]);
        }
    }
    acc
}

/// A grouped layout's stripe kernel. A trait rather than a closure: a closure is compiled as
/// a function of its own, without the entry point's target features, and the kernel's
/// intrinsics would not inline into it (the grouped GEMVs ran at 0.5 GB/s so).
pub(super) trait GroupedRows: LaneFormat {
    /// The activation block `dot_stripe` reads: `Act` as it is, or with what the stripes
    /// need of it alone worked out once per matrix (`Kernels::prepare_groups`).
    type Ready: Block;

    /// Activation rows of `Act` blocks as `Ready` blocks.
    fn ready(acts: &[u8]) -> Cow<'_, [u8]>;

    /// One stripe (eight rows) against `T` activation rows: each activation's eight sums,
    /// one row per lane, bit for bit the same whatever `T`.
    unsafe fn dot_stripe<I: IsaPrimitives, const T: usize>(
        x: &[Self::Weight],
        y: [&[Self::Ready]; T],
    ) -> [__m256; T];
}

// The K-quants' stripes take what they need of the activation from its `bsums` themselves:
// Q4_K's mins want the sums as bytes, and Q6_K's starts read from memory ran one activation
// 6% slower than computed in place (dot_rows bench, from L2).
impl<G: GroupedKQuant> GroupedRows for G {
    type Ready = BlockQ8K;

    fn ready(acts: &[u8]) -> Cow<'_, [u8]> {
        Cow::Borrowed(acts)
    }

    #[inline(always)]
    unsafe fn dot_stripe<I: IsaPrimitives, const T: usize>(
        x: &[G],
        y: [&[BlockQ8K]; T],
    ) -> [__m256; T] {
        dot_group_k_quant::<I, G, T>(x, y)
    }
}

impl GroupedRows for BlockQ6KGroup {
    type Ready = BlockQ8K;

    fn ready(acts: &[u8]) -> Cow<'_, [u8]> {
        Cow::Borrowed(acts)
    }

    #[inline(always)]
    unsafe fn dot_stripe<I: IsaPrimitives, const T: usize>(
        x: &[Self],
        y: [&[BlockQ8K]; T],
    ) -> [__m256; T] {
        dot_group_q6_k::<I, T>(x, y)
    }
}

/// A grouped 32-element format: block by block, eight rows' f16 scales and, per 32 bytes,
/// four quants of every row, unsigned (`q8_0::BlockQ8_0Group`, `q5_0::BlockQ5_0Group`, ...).
pub(super) trait Grouped32: Block {
    /// Quants 4k..4k+3 of every row (k < 8), one row per lane.
    unsafe fn quants<I: IsaPrimitives>(&self, k: usize) -> __m256i;

    fn scales(&self) -> &[[u8; 2]; 8];
}

/// A grouped format whose quants stand for `q − offset`: −offset·Σa starts each block's sums.
pub(super) trait GroupedWithOffset: Grouped32 {
    type Offset: Quants32;
}

/// A grouped format with a min per block (value = q·d + m), against Q8_1 activations.
pub(super) trait GroupedWithMin: Grouped32 {
    /// The largest of `quants`.
    const MAX_QUANT: i32;
    fn mins(&self) -> &[[u8; 2]; 8];
}

/// Word k % 4 of a grouped block's nibbles: the low ones for k < 4, the high ones beyond.
#[inline(always)]
unsafe fn grouped_nibbles(qs: &[[[u8; 4]; 8]; 4], k: usize) -> __m256i {
    let q = load(qs[k % 4].as_ptr().cast());
    let nibbles = match k {
        0..4 => q,
        _ => _mm256_srli_epi16::<4>(q),
    };
    _mm256_and_si256(nibbles, _mm256_set1_epi8(0x0F))
}

/// Stored plus 128: loaded as they lie. Only for VNNI: AVX2's `vpmaddubsw` would saturate
/// 255 × 127 pairs.
impl Grouped32 for BlockQ8_0Group {
    #[inline(always)]
    unsafe fn quants<I: IsaPrimitives>(&self, k: usize) -> __m256i {
        load(self.qs[k].as_ptr().cast())
    }

    fn scales(&self) -> &[[u8; 2]; 8] {
        &self.d
    }
}

impl GroupedWithOffset for BlockQ8_0Group {
    type Offset = Q8_0Plus128;
}

/// The nibbles plus 16 where their fifth bit is set: 0..31.
impl Grouped32 for BlockQ5_0Group {
    #[inline(always)]
    unsafe fn quants<I: IsaPrimitives>(&self, k: usize) -> __m256i {
        I::add_16_where_set(grouped_nibbles(&self.qs, k), self.high_bits[k])
    }

    fn scales(&self) -> &[[u8; 2]; 8] {
        &self.d
    }
}

impl GroupedWithOffset for BlockQ5_0Group {
    type Offset = Q5_0Plus16;
}

impl Grouped32 for BlockQ4_0Group {
    #[inline(always)]
    unsafe fn quants<I: IsaPrimitives>(&self, k: usize) -> __m256i {
        grouped_nibbles(&self.qs, k)
    }

    fn scales(&self) -> &[[u8; 2]; 8] {
        &self.d
    }
}

impl GroupedWithOffset for BlockQ4_0Group {
    type Offset = Q4_0Plus8;
}

impl Grouped32 for BlockQ4_1Group {
    #[inline(always)]
    unsafe fn quants<I: IsaPrimitives>(&self, k: usize) -> __m256i {
        grouped_nibbles(&self.qs, k)
    }

    fn scales(&self) -> &[[u8; 2]; 8] {
        &self.d
    }
}

impl GroupedWithMin for BlockQ4_1Group {
    const MAX_QUANT: i32 = 15;
    fn mins(&self) -> &[[u8; 2]; 8] {
        &self.m
    }
}

/// The nibbles plus 16 where their fifth bit is set: 0..31.
impl Grouped32 for BlockQ5_1Group {
    #[inline(always)]
    unsafe fn quants<I: IsaPrimitives>(&self, k: usize) -> __m256i {
        I::add_16_where_set(grouped_nibbles(&self.qs, k), self.high_bits[k])
    }

    fn scales(&self) -> &[[u8; 2]; 8] {
        &self.d
    }
}

impl GroupedWithMin for BlockQ5_1Group {
    const MAX_QUANT: i32 = 31;
    fn mins(&self) -> &[[u8; 2]; 8] {
        &self.m
    }
}

/// Block b of a grouped 32-element stripe as the rows-in-lanes tiles read it. No transposes:
/// the group is already one row per lane.
#[inline(always)]
unsafe fn pack_group_32<I: IsaPrimitives, G: Grouped32>(g: &G, packed: &mut Packed32<Lanes8<I>>) {
    for (k, q) in packed.quants.iter_mut().enumerate() {
        *q = g.quants::<I>(k);
    }
    packed.scales = f16_per_row(g.scales());
}

/// How a grouped 32-element format settles what its quants' sums alone miss, for the stripe
/// written once over both kinds (`dot_group_32`).
pub(super) trait Stripe32: GroupedRows<Weight: Grouped32> {
    fn act_quants(a: &Self::Ready) -> &[i8; 32];

    /// Where a block's integer sums start.
    fn start(a: &Self::Ready) -> i32;

    /// `acc` plus the block's sums times the rows' scales `d` and the activation's, and what
    /// else the rows owe the block.
    unsafe fn add_block(
        x: &Self::Weight,
        d: __m256,
        a: &Self::Ready,
        sums: __m256i,
        acc: __m256,
    ) -> __m256;
}

/// A grouped format with an offset as the rows-in-lanes kernels read it.
pub(super) struct GroupedLanes<G>(std::marker::PhantomData<G>);

impl<G: GroupedWithOffset> GroupedRows for GroupedLanes<G> {
    type Ready = ReadyQ8_0;

    fn ready(acts: &[u8]) -> Cow<'_, [u8]> {
        Cow::Owned(crate::x86::ready::<G::Offset>(acts))
    }

    #[inline(always)]
    unsafe fn dot_stripe<I: IsaPrimitives, const T: usize>(
        x: &[G],
        y: [&[ReadyQ8_0]; T],
    ) -> [__m256; T] {
        dot_group_32::<I, Self, T>(x, y)
    }
}

/// −offset·Σa, worked out once per matrix, starts the sums.
impl<G: GroupedWithOffset> Stripe32 for GroupedLanes<G> {
    fn act_quants(a: &ReadyQ8_0) -> &[i8; 32] {
        &a.qs
    }

    fn start(a: &ReadyQ8_0) -> i32 {
        a.start()
    }

    #[inline(always)]
    unsafe fn add_block(_: &G, d: __m256, a: &ReadyQ8_0, sums: __m256i, acc: __m256) -> __m256 {
        let scale = _mm256_mul_ps(d, _mm256_set1_ps(a.scale()));
        _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc)
    }
}

/// A grouped format with a min per block as the rows-in-lanes kernels read it.
pub(super) struct GroupedMinLanes<G>(std::marker::PhantomData<G>);

/// Nothing to prepare: the Q8_1 block carries `s` = d'·Σa itself.
impl<G: GroupedWithMin> GroupedRows for GroupedMinLanes<G> {
    type Ready = BlockQ8_1;

    fn ready(acts: &[u8]) -> Cow<'_, [u8]> {
        Cow::Borrowed(acts)
    }

    #[inline(always)]
    unsafe fn dot_stripe<I: IsaPrimitives, const T: usize>(
        x: &[G],
        y: [&[BlockQ8_1]; T],
    ) -> [__m256; T] {
        dot_group_32::<I, Self, T>(x, y)
    }
}

/// The sums start at zero; the rows' mins meet the activation's `s` after scaling.
impl<G: GroupedWithMin> Stripe32 for GroupedMinLanes<G> {
    fn act_quants(a: &BlockQ8_1) -> &[i8; 32] {
        &a.qs
    }

    fn start(_: &BlockQ8_1) -> i32 {
        0
    }

    #[inline(always)]
    unsafe fn add_block(x: &G, d: __m256, a: &BlockQ8_1, sums: __m256i, acc: __m256) -> __m256 {
        let scale = _mm256_mul_ps(d, broadcast_f16(a.d));
        let acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc);
        _mm256_fmadd_ps(f16_per_row(x.mins()), broadcast_f16(a.s), acc)
    }
}

impl<G: GroupedWithMin> LaneFormat for GroupedMinLanes<G> {
    type Weight = G;
    type Act = BlockQ8_1;
    type Packed<V: RowLanes> = Packed32Min<V>;
    /// Nothing: the activation's `s` is in its block.
    type Extra = ();
    const EXTRA_PER_BLOCK: usize = 0;
    const MAX_QUANT: i32 = G::MAX_QUANT;
    const STRIPE_ROWS: usize = GROUP_ROWS;

    fn extra(_: &BlockQ8_1) -> impl Iterator<Item = ()> {
        std::iter::empty()
    }

    /// No transposes: the group is already one row per lane.
    #[inline(always)]
    unsafe fn pack_8<I: IsaPrimitives>(
        stripes: &[&[G]],
        b: usize,
        packed: &mut Packed32Min<Lanes8<I>>,
    ) {
        let g = stripes[0].get_unchecked(b);
        pack_group_32::<I, G>(g, &mut packed.rows);
        packed.mins = f16_per_row(g.mins());
    }

    #[inline(always)]
    unsafe fn tile<V: RowLanes, const T: usize>(
        packed: &[Packed32Min<V>],
        acts: [&[BlockQ8_1]; T],
        _: [&[()]; T],
    ) -> [V::Floats; T] {
        tile_32_min_rows_in_lanes::<V, T>(packed, acts, Self::MAX_QUANT)
    }

    #[inline(always)]
    unsafe fn tail<I: IsaPrimitives>(
        rows: &[u8],
        row_bytes: usize,
        acts: &[u8],
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        tail_grouped::<I, Self>(rows, row_bytes, &Self::ready(acts), n_acts, out, out_stride)
    }
}

/// One stripe (eight rows) of a grouped 32-element format against `T` activation rows: the
/// unsigned quants meet four activation bytes broadcast in one `vpdpbusd` for all eight rows,
/// then each block's sums are scaled for the eight rows at once, where row by row every block
/// costs a conversion, a scale product and an FMA per row and each row a horizontal sum.
#[inline(always)]
unsafe fn dot_group_32<I: IsaPrimitives, S: Stripe32, const T: usize>(
    x: &[S::Weight],
    y: [&[S::Ready]; T],
) -> [__m256; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, xb) in x.iter().enumerate() {
        prefetch_ahead::<I, _>(xb);
        let yb: [&S::Ready; T] = std::array::from_fn(|t| y[t].get_unchecked(b));
        // Two chains of four products instead of one of eight, so that the next block's need
        // not wait as long on this one's.
        let mut sums: [[__m256i; T]; 2] = [
            std::array::from_fn(|t| _mm256_set1_epi32(S::start(yb[t]))),
            [_mm256_setzero_si256(); T],
        ];
        for k in 0..8 {
            let q = xb.quants::<I>(k);
            for t in 0..T {
                let four = S::act_quants(yb[t]).as_ptr().add(4 * k).cast::<i32>();
                let chain = &mut sums[k % 2][t];
                *chain = I::dot_u8_i8(*chain, q, _mm256_set1_epi32(four.read_unaligned()));
            }
        }
        let sums: [__m256i; T] = std::array::from_fn(|t| _mm256_add_epi32(sums[0][t], sums[1][t]));
        let d = f16_per_row(xb.scales());
        for t in 0..T {
            acc[t] = S::add_block(xb, d, yb[t], sums[t], acc[t]);
        }
    }
    acc
}

/// A grouped layout against activation rows as `GroupedRows::ready` made them (a
/// `dot_groups` body: token-major sums).
#[inline(always)]
pub(super) unsafe fn dot_groups_ready<I: IsaPrimitives, G: GroupedRows>(
    groups: &[u8],
    row_bytes: usize,
    acts: &[u8],
    n_acts: usize,
    out: &mut [f32],
) {
    tail_grouped::<I, G>(groups, row_bytes, acts, n_acts, out, out.len() / n_acts)
}

impl<G: GroupedWithOffset> LaneFormat for GroupedLanes<G> {
    type Weight = G;
    type Act = BlockQ8_0;
    type Packed<V: RowLanes> = Packed32<V>;
    type Extra = i32;
    const EXTRA_PER_BLOCK: usize = 1;
    const MAX_QUANT: i32 = 2 * G::Offset::OFFSET as u8 as i32 - 1;
    const STRIPE_ROWS: usize = GROUP_ROWS;

    fn extra(a: &BlockQ8_0) -> impl Iterator<Item = i32> {
        offset_sum::<G::Offset>(a)
    }

    /// No transposes: the group is already one row per lane.
    #[inline(always)]
    unsafe fn pack_8<I: IsaPrimitives>(
        stripes: &[&[G]],
        b: usize,
        packed: &mut Packed32<Lanes8<I>>,
    ) {
        pack_group_32::<I, G>(stripes[0].get_unchecked(b), packed)
    }

    #[inline(always)]
    unsafe fn tile<V: RowLanes, const T: usize>(
        packed: &[Packed32<V>],
        acts: [&[BlockQ8_0]; T],
        extra: [&[i32]; T],
    ) -> [V::Floats; T] {
        tile_32_rows_in_lanes::<V, T>(packed, acts, extra, Self::MAX_QUANT)
    }

    #[inline(always)]
    unsafe fn tail<I: IsaPrimitives>(
        rows: &[u8],
        row_bytes: usize,
        acts: &[u8],
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        tail_grouped::<I, Self>(rows, row_bytes, &Self::ready(acts), n_acts, out, out_stride)
    }
}

/// A group's eight f16s (its rows' `d` or `dmin`) as f32 lanes.
#[inline(always)]
unsafe fn f16_per_row(halves: &[[u8; 2]; 8]) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(halves.as_ptr().cast()))
}

/// A group block's `d·scale` per sub-block and its mins, one row per lane, as `PackedQ4K`
/// and `PackedQ5K` hold them.
#[inline(always)]
unsafe fn group_scales_mins(
    head: &KQuantGroupHead,
    scales: &mut [__m256; 8],
    mins: &mut SubBlockMins<Lanes8<impl IsaPrimitives>>,
) {
    let d = f16_per_row(&head.d);
    let [sc_low, sc_high, min_low, min_high] = scales_mins_in_lanes(&head.scales);
    for (j, scale) in scales.iter_mut().enumerate() {
        *scale = _mm256_mul_ps(_mm256_cvtepi32_ps(sub_block_lanes([sc_low, sc_high], j)), d);
    }
    for (k, pair) in mins.pairs.iter_mut().enumerate() {
        let min = |j| sub_block_lanes([min_low, min_high], j);
        *pair = _mm256_or_si256(min(2 * k), _mm256_slli_epi32::<16>(min(2 * k + 1)));
    }
    mins.dmin = f16_per_row(&head.dmin);
}

impl<G: GroupedKQuant> LaneFormat for G {
    type Weight = G;
    type Act = BlockQ8K;
    type Packed<V: RowLanes> = G::Packed<V>;
    type Extra = i32;
    const EXTRA_PER_BLOCK: usize = 4;
    const MAX_QUANT: i32 = G::MAX_QUANT;
    const STRIPE_ROWS: usize = GROUP_ROWS;

    fn extra(a: &BlockQ8K) -> impl Iterator<Item = i32> {
        sum_pairs(a)
    }

    #[inline(always)]
    unsafe fn pack_8<I: IsaPrimitives>(
        stripes: &[&[G]],
        b: usize,
        packed: &mut G::Packed<Lanes8<I>>,
    ) {
        stripes[0].get_unchecked(b).pack::<I>(packed)
    }

    #[inline(always)]
    unsafe fn tile<V: RowLanes, const T: usize>(
        packed: &[G::Packed<V>],
        acts: [&[BlockQ8K]; T],
        extra: [&[i32]; T],
    ) -> [V::Floats; T] {
        tile_k_quant_rows_in_lanes::<V, _, T>(packed, acts, extra, Self::MAX_QUANT)
    }

    #[inline(always)]
    unsafe fn tail<I: IsaPrimitives>(
        rows: &[u8],
        row_bytes: usize,
        acts: &[u8],
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        tail_grouped::<I, Self>(rows, row_bytes, &Self::ready(acts), n_acts, out, out_stride)
    }
}

/// A stripe's sums for consecutive activations, each to its own row of `out`. A function, not
/// a closure in `tail_grouped`: with Q6_K's stripe kernel in runs inlined there, LLVM left the
/// closure out of line, a function without the entry point's target features whose
/// intrinsics are calls (scripts/check-kernel-inlining).
#[inline(always)]
unsafe fn store_stripe(sums: &[__m256], out: &mut [f32], out_stride: usize) {
    for (i, sum) in sums.iter().enumerate() {
        let at = i * out_stride;
        _mm256_storeu_ps(out[at..at + GROUP_ROWS].as_mut_ptr(), *sum);
    }
}

/// A grouped format's `LaneFormat::tail` and its `dot_groups` (one token, or one from each
/// of a few sequences), over activations as `GroupedRows::ready` made them: each stripe
/// against up to four activations at a time, unpacking its quants once for them all. A few
/// activations do not pay for packing tiles: Gemma 3 270M, eight sequences generating
/// together (batched-bench --no-mmap -t 1), 190 t/s through the tiles, 300 through this.
#[inline(always)]
unsafe fn tail_grouped<I: IsaPrimitives, G: GroupedRows>(
    rows: &[u8],
    row_bytes: usize,
    acts: &[u8],
    n_acts: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    use std::array::from_fn;
    let act_bytes = acts.len() / n_acts;
    let act = |t: usize| as_blocks::<G::Ready>(&acts[t * act_bytes..(t + 1) * act_bytes]);
    for (s, x) in rows.chunks_exact(GROUP_ROWS * row_bytes).enumerate() {
        let x = as_blocks::<G::Weight>(x);
        let mut t0 = 0;
        while t0 < n_acts {
            let n = (n_acts - t0).min(4);
            let acts = |i: usize| act(t0 + i);
            let mut sums = [_mm256_setzero_ps(); 4];
            match n {
                1 => sums[..1].copy_from_slice(&G::dot_stripe::<I, 1>(x, [acts(0)])),
                2 => sums[..2].copy_from_slice(&G::dot_stripe::<I, 2>(x, from_fn(acts))),
                3 => sums[..3].copy_from_slice(&G::dot_stripe::<I, 3>(x, from_fn(acts))),
                _ => sums.copy_from_slice(&G::dot_stripe::<I, 4>(x, from_fn(acts))),
            }
            let out = &mut out[t0 * out_stride + s * GROUP_ROWS..];
            store_stripe(&sums[..n], out, out_stride);
            t0 += n;
        }
    }
}

/// Quant chunk `c4` (0..4) of a 128-quant half from one four-byte column of `ql` and `qh`
/// of eight rows: the low (`c4` < 2) or high nibble of `ql`, and bits 2·`c4`..2·`c4`+1 of
/// `qh` moved to bits 4-5, giving 0..63 (`q6_k::unpack_quants` without the − 32).
#[inline(always)]
unsafe fn q6_k_quants(ql: __m256i, qh: __m256i, c4: usize) -> __m256i {
    let m4 = _mm256_set1_epi8(0x0F);
    let low = match c4 {
        0 | 1 => _mm256_and_si256(ql, m4),
        _ => _mm256_and_si256(_mm256_srli_epi16::<4>(ql), m4),
    };
    // 16-bit shifts carry bits across bytes; the mask drops them.
    let high = match c4 {
        0 => _mm256_slli_epi16::<4>(qh),
        1 => _mm256_slli_epi16::<2>(qh),
        2 => qh,
        _ => _mm256_srli_epi16::<2>(qh),
    };
    _mm256_or_si256(low, _mm256_and_si256(high, _mm256_set1_epi8(0x30)))
}

/// One Q6_K group stripe (eight rows) against `T` activation rows, as `dot_group_k_quant`. A
/// quarter of a half's columns (four of its eight) holds one 16-quant sub-block of each of its
/// four chunks: their three words per column make the four chunks' quants, met by each
/// activation in runs (`IsaPrimitives::run_len`), each run then multiplied by the eight rows'
/// scales at once. The quants' offset of 32 adds 32·Σa to each sub-block's sum: where a run
/// holds a whole sub-block it starts at −32·Σa; 16-bit runs cannot hold that, so the block's
/// sums start at −32·Σ scale·Σa instead.
// Indexed loops: the same loops over iterators of the accumulators ran one activation 9%
// slower (dot_rows bench, from L2), and arrays made by `from_fn` closures that call the
// helpers below ran at 0.4 of the speed (a closure is a function without the entry point's
// target features, so the intrinsics in it are calls).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn dot_group_q6_k<I: IsaPrimitives, const T: usize>(
    x: &[BlockQ6KGroup],
    y: [&[BlockQ8K]; T],
) -> [__m256; T] {
    let run = I::run_len(BlockQ6KGroup::MAX_QUANT);
    let offset_in_runs = run >= 4;
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, xb) in x.iter().enumerate() {
        prefetch_ahead::<I, _>(xb);
        let yb: [&BlockQ8K; T] = std::array::from_fn(|t| y[t].get_unchecked(b));
        let mut sums = [_mm256_setzero_si256(); T];
        if !offset_in_runs {
            sums = q6_k_scaled_bsums::<I, T>(xb, yb);
            for sum in &mut sums {
                *sum = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(*sum));
            }
        }
        for (half, columns) in xb.qs.iter().enumerate() {
            for (quarter, columns) in columns.chunks_exact(4).enumerate() {
                // Sub-block 2·c4 + quarter of the half, for chunk c4.
                let sub_block = |c4: usize| 8 * half + 2 * c4 + quarter;
                let mut scales = [_mm256_setzero_si256(); 4];
                for (c4, scale) in scales.iter_mut().enumerate() {
                    *scale = I::run_scale(q6_k_scales(xb, sub_block(c4)));
                }
                for first in (0..4).step_by(run) {
                    let mut runs = [[_mm256_setzero_si256(); 4]; T];
                    if offset_in_runs {
                        for t in 0..T {
                            for c4 in 0..4 {
                                let offset = -32 * i32::from(yb[t].bsum(sub_block(c4)));
                                runs[t][c4] = _mm256_set1_epi32(offset);
                            }
                        }
                    }
                    for (k, words) in columns.iter().enumerate().skip(first).take(run) {
                        let [ql0, ql1, qh] = words.map(|w| load(w.as_ptr().cast()));
                        for c4 in 0..4 {
                            let quants = q6_k_quants(if c4 % 2 == 0 { ql0 } else { ql1 }, qh, c4);
                            let at = 128 * half + 32 * c4 + 4 * (4 * quarter + k);
                            for t in 0..T {
                                let a = yb[t].qs.as_ptr().add(at).cast::<i32>().read_unaligned();
                                let products = &mut runs[t][c4];
                                *products =
                                    I::add_run_products(*products, quants, _mm256_set1_epi32(a));
                            }
                        }
                    }
                    for c4 in 0..4 {
                        for t in 0..T {
                            sums[t] = I::add_scaled_run(sums[t], runs[t][c4], scales[c4]);
                        }
                    }
                }
            }
        }
        let d = f16_per_row(&xb.d);
        for t in 0..T {
            let d = _mm256_mul_ps(d, _mm256_set1_ps(yb[t].d()));
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sums[t]), acc[t]);
        }
    }
    acc
}

/// Sub-block `s`'s scales of a Q6_K group, one row per lane.
#[inline(always)]
unsafe fn q6_k_scales(xb: &BlockQ6KGroup, s: usize) -> __m256i {
    _mm256_cvtepi8_epi32(_mm_loadl_epi64(xb.scales[s].as_ptr().cast()))
}

/// Σ scale·Σa over a Q6_K group block's 16 sub-blocks for each of `T` activations, one row
/// per lane: two sub-blocks per multiply-add, their scales in the two words of each lane
/// (made once for all the activations) against an activation's two sub-block sums, which lie
/// side by side in `bsums`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn q6_k_scaled_bsums<I: IsaPrimitives, const T: usize>(
    xb: &BlockQ6KGroup,
    acts: [&BlockQ8K; T],
) -> [__m256i; T] {
    let mut sums = [_mm256_setzero_si256(); T];
    for pair in 0..8 {
        let scales = _mm256_blend_epi16::<0b1010_1010>(
            q6_k_scales(xb, 2 * pair),
            _mm256_slli_epi32::<16>(q6_k_scales(xb, 2 * pair + 1)),
        );
        for t in 0..T {
            let bsums = acts[t].bsums.as_ptr().add(4 * pair);
            let bsums = _mm256_set1_epi32(bsums.cast::<i32>().read_unaligned());
            sums[t] = I::madd_acc(sums[t], scales, bsums);
        }
    }
    sums
}

/// Block b of a Q6_K group stripe as `PackedQ6K`.
#[inline(always)]
unsafe fn pack_q6_k_group<I: IsaPrimitives>(
    stripes: &[&[BlockQ6KGroup]],
    b: usize,
    packed: &mut PackedQ6K<Lanes8<I>>,
) {
    let g = stripes[0].get_unchecked(b);
    let d = f16_per_row(&g.d);
    for (s, scale) in packed.scales.iter_mut().enumerate() {
        *scale = _mm256_mul_ps(_mm256_cvtepi32_ps(q6_k_scales(g, s)), d);
    }
    for (chunk, quants) in packed.quants.iter_mut().enumerate() {
        let (half, c4) = (chunk / 4, chunk % 4);
        for (k, q) in quants.iter_mut().enumerate() {
            let words = &g.qs[half][k];
            let ql = load(words[c4 % 2].as_ptr().cast());
            *q = q6_k_quants(ql, load(words[2].as_ptr().cast()), c4);
        }
    }
}

impl LaneFormat for BlockQ6KGroup {
    type Weight = BlockQ6KGroup;
    type Act = BlockQ8K;
    type Packed<V: RowLanes> = PackedQ6K<V>;
    type Extra = i32;
    const EXTRA_PER_BLOCK: usize = 16;
    const MAX_QUANT: i32 = 63;
    const STRIPE_ROWS: usize = GROUP_ROWS;

    fn extra(a: &BlockQ8K) -> impl Iterator<Item = i32> {
        sub_block_starts(a, BlockQ6K::OFFSET)
    }

    #[inline(always)]
    unsafe fn pack_8<I: IsaPrimitives>(
        stripes: &[&[BlockQ6KGroup]],
        b: usize,
        packed: &mut PackedQ6K<Lanes8<I>>,
    ) {
        pack_q6_k_group(stripes, b, packed)
    }

    #[inline(always)]
    unsafe fn tile<V: RowLanes, const T: usize>(
        packed: &[PackedQ6K<V>],
        acts: [&[BlockQ8K]; T],
        extra: [&[i32]; T],
    ) -> [V::Floats; T] {
        tile_q6_k_rows_in_lanes::<V, _, T>(packed, acts, extra, Self::MAX_QUANT)
    }

    #[inline(always)]
    unsafe fn tail<I: IsaPrimitives>(
        rows: &[u8],
        row_bytes: usize,
        acts: &[u8],
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        tail_grouped::<I, Self>(rows, row_bytes, &Self::ready(acts), n_acts, out, out_stride)
    }
}

/// A 32-element format read as `F`, for the rows-in-lanes tiles.
pub(super) struct InLanes<F>(std::marker::PhantomData<F>);

impl<F: Quants32> LaneFormat for InLanes<F> {
    type Weight = F::Block;
    type Act = BlockQ8_0;
    type Packed<V: RowLanes> = Packed32<V>;
    type Extra = i32;
    const EXTRA_PER_BLOCK: usize = 1;
    const MAX_QUANT: i32 = 2 * F::OFFSET as u8 as i32 - 1;

    fn extra(a: &BlockQ8_0) -> impl Iterator<Item = i32> {
        offset_sum::<F>(a)
    }

    #[inline(always)]
    unsafe fn pack_8<I: IsaPrimitives>(
        rows: &[&[F::Block]],
        b: usize,
        packed: &mut Packed32<Lanes8<I>>,
    ) {
        pack_32_8_rows::<I, F>(rows, b, packed)
    }

    #[inline(always)]
    unsafe fn tile<V: RowLanes, const T: usize>(
        packed: &[Packed32<V>],
        acts: [&[BlockQ8_0]; T],
        extra: [&[i32]; T],
    ) -> [V::Floats; T] {
        tile_32_rows_in_lanes::<V, T>(packed, acts, extra, Self::MAX_QUANT)
    }

    #[inline(always)]
    unsafe fn tail<I: IsaPrimitives>(
        rows: &[u8],
        row_bytes: usize,
        acts: &[u8],
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        tiles_q8_acts::<I, F>(rows, row_bytes, acts, n_acts, out, out_stride)
    }
}

/// Q8_0 rows of one block as `Q8_0InNibbles` reads them: the quants plus 128 split into their
/// high and low nibbles (u = 16·high + low), each transposed as `Packed32` holds its quants,
/// and the rows' scales, also times 16.
#[repr(C)]
pub(super) struct PackedQ8_0Nibbles<V: RowLanes> {
    high: [V::Ints; 8],
    low: [V::Ints; 8],
    scales: V::Floats,
    scales_16: V::Floats,
}
copy_pack!(PackedQ8_0Nibbles);

/// Q8_0 for the rows-in-lanes tiles without VNNI. Its quants plus 128 (up to 255) would
/// saturate AVX2's `vpmaddubsw` (2 × 255 × 127 is more than 32767); as two nibbles each, the
/// quants meet the activations as two 4-bit formats' do, in runs of eight products
/// (`IsaPrimitives::run_len`), and the high nibbles' sums are scaled by 16·d.
pub(super) struct Q8_0InNibbles;

impl LaneFormat for Q8_0InNibbles {
    type Weight = BlockQ8_0;
    type Act = BlockQ8_0;
    type Packed<V: RowLanes> = PackedQ8_0Nibbles<V>;
    type Extra = i32;
    const EXTRA_PER_BLOCK: usize = 1;
    const MAX_QUANT: i32 = 15;

    fn extra(a: &BlockQ8_0) -> impl Iterator<Item = i32> {
        offset_sum::<Q8_0Plus128>(a)
    }

    #[inline(always)]
    unsafe fn pack_8<I: IsaPrimitives>(
        rows: &[&[BlockQ8_0]],
        b: usize,
        packed: &mut PackedQ8_0Nibbles<Lanes8<I>>,
    ) {
        let mut whole: Packed32<Lanes8<I>> = std::mem::zeroed();
        pack_32_8_rows::<I, Q8_0Plus128>(rows, b, &mut whole);
        let m4 = _mm256_set1_epi8(0x0F);
        for (k, q) in whole.quants.iter().enumerate() {
            packed.high[k] = _mm256_and_si256(_mm256_srli_epi16::<4>(*q), m4);
            packed.low[k] = _mm256_and_si256(*q, m4);
        }
        packed.scales = whole.scales;
        packed.scales_16 = _mm256_mul_ps(whole.scales, _mm256_set1_ps(16.0));
    }

    #[inline(always)]
    unsafe fn tile<V: RowLanes, const T: usize>(
        packed: &[PackedQ8_0Nibbles<V>],
        acts: [&[BlockQ8_0]; T],
        offset_sums: [&[i32]; T],
    ) -> [V::Floats; T] {
        let mut acc = [V::zero_floats(); T];
        for (b, p) in packed.iter().enumerate() {
            let qs = std::array::from_fn(|t| acts[t].get_unchecked(b).qs.as_ptr());
            let starts = std::array::from_fn(|t| V::splat_i32(*offset_sums[t].get_unchecked(b)));
            let low = V::dots::<T, 8>(starts, &p.low, qs, Self::MAX_QUANT);
            let high = V::dots::<T, 8>([V::zero_ints(); T], &p.high, qs, Self::MAX_QUANT);
            for t in 0..T {
                let ad = V::splat_f16(acts[t].get_unchecked(b).d);
                let sums = V::mul(V::to_floats(high[t]), p.scales_16);
                let sums = V::mul_add(V::to_floats(low[t]), p.scales, sums);
                acc[t] = V::mul_add(sums, ad, acc[t]);
            }
        }
        acc
    }

    #[inline(always)]
    unsafe fn tail<I: IsaPrimitives>(
        rows: &[u8],
        row_bytes: usize,
        acts: &[u8],
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        tiles_q8_acts::<I, SignedQ8_0>(rows, row_bytes, acts, n_acts, out, out_stride)
    }
}

/// Q8_0's rows-in-lanes tiles: its quants plus 128 where the ISA's byte products cannot
/// saturate (VNNI's `vpdpbusd` sums into 32 bits), as nibbles where they can (AVX2).
#[inline(always)]
pub(super) unsafe fn dot_tile_q8_0<I: IsaPrimitives, const ACTS: usize>(
    rows: &[u8],
    row_bytes: usize,
    acts: &[u8],
    n_acts: usize,
    out: &mut [f32],
) {
    if I::UNSATURATED_BYTE_PRODUCTS {
        dot_tile_in_lanes::<I, InLanes<Q8_0Plus128>, Lanes8<I>, ACTS>(
            rows, row_bytes, acts, n_acts, out,
        )
    } else {
        dot_tile_in_lanes::<I, Q8_0InNibbles, Lanes8<I>, ACTS>(rows, row_bytes, acts, n_acts, out)
    }
}

/// The scores of several f16 queries against the same f16 keys (`scores`: query after
/// query, a score per key), each sum taken exactly as `dot_f16` takes it: a query's
/// scores do not depend on which queries share the call. Each key is converted once for
/// `QUERIES` queries instead of once per query, and the queries once in all.
#[inline(always)]
pub(super) unsafe fn attention_scores_f16<const QUERIES: usize>(
    queries: &[u8],
    keys: &[u8],
    dim: usize,
    scores: &mut [f32],
) {
    let n_keys = keys.len() / (2 * dim);
    let mut widened = vec![0f32; queries.len() / 2];
    let mut eights = widened.chunks_exact_mut(8);
    for (to, from) in (&mut eights).zip(queries.chunks_exact(16)) {
        let eight = _mm256_cvtph_ps(_mm_loadu_si128(from.as_ptr().cast()));
        _mm256_storeu_ps(to.as_mut_ptr(), eight);
    }
    let rest = eights.into_remainder();
    let rest_halves = queries[queries.len() - 2 * rest.len()..].chunks_exact(2);
    for (to, from) in rest.iter_mut().zip(rest_halves) {
        *to = crate::block::f16_to_f32([from[0], from[1]]);
    }
    for (group, out) in widened
        .chunks(QUERIES * dim)
        .zip(scores.chunks_mut(QUERIES * n_keys))
    {
        match group.len() / dim {
            1 => scores_of_queries::<1>(group, keys, dim, out),
            2 => scores_of_queries::<2>(group, keys, dim, out),
            3 => scores_of_queries::<3>(group, keys, dim, out),
            _ => scores_of_queries::<QUERIES>(group, keys, dim, out),
        }
    }
}

/// `attention_scores_f16` for `M` queries already in f32.
#[inline(always)]
unsafe fn scores_of_queries<const M: usize>(
    queries: &[f32],
    keys: &[u8],
    dim: usize,
    scores: &mut [f32],
) {
    let n_keys = keys.len() / (2 * dim);
    let widen = |p: *const u8| _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
    let query = |m: usize, d: usize| queries.as_ptr().add(m * dim + d);
    // The last `dim % 8` elements (none in the models' head sizes), zero-padded once.
    let (whole, rest) = (dim / 8 * 8, dim % 8);
    let tail_queries: [__m256; M] = std::array::from_fn(|m| {
        let mut tail = [0f32; 8];
        std::ptr::copy_nonoverlapping(query(m, whole), tail.as_mut_ptr(), rest);
        _mm256_loadu_ps(tail.as_ptr())
    });
    for (i, key) in keys.chunks_exact(2 * dim).enumerate() {
        let key = key.as_ptr();
        let mut sums = [[_mm256_setzero_ps(); 4]; M];
        let mut d = 0;
        while d + 32 <= dim {
            for k in 0..4 {
                let x = widen(key.add(2 * (d + 8 * k)));
                for (m, s) in sums.iter_mut().enumerate() {
                    s[k] = _mm256_fmadd_ps(x, _mm256_loadu_ps(query(m, d + 8 * k)), s[k]);
                }
            }
            d += 32;
        }
        while d + 8 <= dim {
            let x = widen(key.add(2 * d));
            for (m, s) in sums.iter_mut().enumerate() {
                s[0] = _mm256_fmadd_ps(x, _mm256_loadu_ps(query(m, d)), s[0]);
            }
            d += 8;
        }
        let totals: [__m256; M] = std::array::from_fn(|m| {
            let s = &sums[m];
            _mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3]))
        });
        let mut dots = [0f32; M];
        for (pair, totals) in dots.chunks_mut(2).zip(totals.chunks(2)) {
            match totals {
                [a, b] => (pair[0], pair[1]) = hsum_ps_pair(*a, *b),
                [a] => pair[0] = hsum_ps(*a),
                _ => unreachable!(),
            }
        }
        if rest > 0 {
            let mut tail_key = [0u8; 16];
            std::ptr::copy_nonoverlapping(key.add(2 * whole), tail_key.as_mut_ptr(), 2 * rest);
            let tail_key = widen(tail_key.as_ptr());
            for (dot, tail_query) in dots.iter_mut().zip(&tail_queries) {
                *dot += hsum_ps(_mm256_mul_ps(tail_key, *tail_query));
            }
        }
        for (m, dot) in dots.iter().enumerate() {
            *scores.get_unchecked_mut(m * n_keys + i) = *dot;
        }
    }
}

/// `hsum_ps` of two vectors at once, each summed in the same order.
#[inline(always)]
unsafe fn hsum_ps_pair(a: __m256, b: __m256) -> (f32, f32) {
    let halves = _mm256_add_ps(
        _mm256_permute2f128_ps::<0x20>(a, b),
        _mm256_permute2f128_ps::<0x31>(a, b),
    );
    let pairs = _mm256_add_ps(halves, _mm256_shuffle_ps::<0b11_10_11_10>(halves, halves));
    let sums = _mm256_add_ps(pairs, _mm256_movehdup_ps(pairs));
    (
        _mm_cvtss_f32(_mm256_castps256_ps128(sums)),
        _mm_cvtss_f32(_mm256_extractf128_ps::<1>(sums)),
    )
}

/// `exp::exp_nonpositive` on eight lanes, the same operations in the same order.
#[inline(always)]
unsafe fn exp_nonpositive(x: __m256) -> __m256 {
    use crate::exp::*;
    let set = _mm256_set1_ps;
    let shifted = _mm256_fmadd_ps(x, set(LOG2_E), set(SHIFTER));
    let n = _mm256_sub_ps(shifted, set(SHIFTER));
    let b = _mm256_fnmadd_ps(n, set(LN2_LOW), _mm256_fnmadd_ps(n, set(LN2_HIGH), x));
    let u = _mm256_mul_ps(b, b);
    let high = _mm256_fmadd_ps(_mm256_fmadd_ps(set(P5), b, set(P4)), u, {
        _mm256_fmadd_ps(set(P3), b, set(P2))
    });
    let j = _mm256_fmadd_ps(high, u, _mm256_fmadd_ps(set(P1), b, set(1.0)));
    let exponent = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(SPLIT + 127));
    let power = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(exponent));
    let unsplit = set(f32::from_bits(((127 - SPLIT) as u32) << 23));
    let scaled = _mm256_mul_ps(_mm256_mul_ps(j, power), unsplit);
    // Not below the lowest power, or NaN: kept.
    let kept = _mm256_cmp_ps::<_CMP_NLT_UQ>(n, set(LOWEST_POWER));
    _mm256_and_ps(scaled, kept)
}

/// `tanh::tanh` on eight lanes, the same operations in the same order.
#[inline(always)]
unsafe fn tanh(x: __m256) -> __m256 {
    use crate::tanh::{SMALL, TAYLOR};
    let sign_bit = _mm256_set1_ps(-0.0);
    let a = _mm256_andnot_ps(sign_bit, x);
    let u = _mm256_mul_ps(a, a);
    let mut p = _mm256_set1_ps(TAYLOR[0]);
    for &c in &TAYLOR[1..] {
        p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(c));
    }
    let near_zero = _mm256_fmadd_ps(_mm256_mul_ps(a, u), p, a);
    let t = exp_nonpositive(_mm256_mul_ps(_mm256_set1_ps(-2.0), a));
    let one = _mm256_set1_ps(1.0);
    let beyond = _mm256_div_ps(_mm256_sub_ps(one, t), _mm256_add_ps(one, t));
    let is_small = _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_set1_ps(SMALL));
    let magnitude = _mm256_blendv_ps(beyond, near_zero, is_small);
    _mm256_or_ps(magnitude, _mm256_and_ps(x, sign_bit))
}

/// `tanh::soft_cap` eight elements at a time, the rest by the scalar function.
#[inline(always)]
pub(super) unsafe fn soft_cap(x: &mut [f32], cap: f32) {
    let caps = _mm256_set1_ps(cap);
    let mut chunks = x.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let p = chunk.as_mut_ptr();
        let capped = _mm256_mul_ps(caps, tanh(_mm256_div_ps(_mm256_loadu_ps(p), caps)));
        _mm256_storeu_ps(p, capped);
    }
    crate::tanh::soft_cap(chunks.into_remainder(), cap);
}

/// `exp::softmax_exponentials`: each group's f32 sum is `hsum_ps` of its two halves
/// added, the order of `_mm512_reduce_add_ps`.
#[inline(always)]
pub(super) unsafe fn softmax_exponentials(x: &mut [f32], max: f32) -> f64 {
    let mut sum = 0f64;
    let mut groups = x.chunks_exact_mut(crate::exp::GROUP);
    let shift = _mm256_set1_ps(max);
    for group in &mut groups {
        let p = group.as_mut_ptr();
        let low = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(p), shift));
        let high = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(p.add(8)), shift));
        _mm256_storeu_ps(p, low);
        _mm256_storeu_ps(p.add(8), high);
        sum += f64::from(hsum_ps(_mm256_add_ps(low, high)));
    }
    for v in groups.into_remainder() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    sum
}

/// The weighted sums of f16 value rows for several queries (`weights` and `out` query
/// after query). Every element's sum runs over the rows in order whatever the grouping,
/// so a query's result does not depend on which queries share the call; each value is
/// converted once for `QUERIES` queries. Each group of 32 (then 8) output
/// elements stays in registers while every row is added to it.
#[inline(always)]
pub(super) unsafe fn accumulate_f16_rows<const QUERIES: usize>(
    weights: &[f32],
    rows: &[u8],
    out: &mut [f32],
    queries: usize,
) {
    let dim = out.len() / queries;
    let n_rows = weights.len() / queries;
    for (weights, out) in weights
        .chunks(QUERIES * n_rows)
        .zip(out.chunks_mut(QUERIES * dim))
    {
        match out.len() / dim {
            1 => accumulate_for_queries::<1>(weights, rows, out, dim),
            2 => accumulate_for_queries::<2>(weights, rows, out, dim),
            3 => accumulate_for_queries::<3>(weights, rows, out, dim),
            _ => accumulate_for_queries::<QUERIES>(weights, rows, out, dim),
        }
    }
}

/// `accumulate_f16_rows` for `M` queries.
#[inline(always)]
unsafe fn accumulate_for_queries<const M: usize>(
    weights: &[f32],
    rows: &[u8],
    out: &mut [f32],
    dim: usize,
) {
    let n_rows = weights.len() / M;
    let value = |i: usize, d: usize| {
        _mm256_cvtph_ps(_mm_loadu_si128(rows.as_ptr().add(2 * (i * dim + d)).cast()))
    };
    let weight = |m: usize, i: usize| _mm256_set1_ps(*weights.get_unchecked(m * n_rows + i));
    let out_at = |m: usize, d: usize| m * dim + d;
    let mut d = 0;
    while d + 32 <= dim {
        let mut acc = [[_mm256_setzero_ps(); 4]; M];
        for (m, acc) in acc.iter_mut().enumerate() {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(out.as_ptr().add(out_at(m, d + 8 * k)));
            }
        }
        for i in 0..n_rows {
            let w: [__m256; M] = std::array::from_fn(|m| weight(m, i));
            for k in 0..4 {
                let v = value(i, d + 8 * k);
                for (acc, w) in acc.iter_mut().zip(&w) {
                    acc[k] = _mm256_fmadd_ps(*w, v, acc[k]);
                }
            }
        }
        for (m, acc) in acc.iter().enumerate() {
            for (k, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(out_at(m, d + 8 * k)), *a);
            }
        }
        d += 32;
    }
    while d + 8 <= dim {
        let mut acc: [__m256; M] =
            std::array::from_fn(|m| _mm256_loadu_ps(out.as_ptr().add(out_at(m, d))));
        for i in 0..n_rows {
            let v = value(i, d);
            for (m, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(weight(m, i), v, *a);
            }
        }
        for (m, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(out_at(m, d)), *a);
        }
        d += 8;
    }
    for d in d..dim {
        for i in 0..n_rows {
            let at = rows.as_ptr().add(2 * (i * dim + d));
            let v = _mm_set_ss(crate::block::f16_to_f32([*at, *at.add(1)]));
            for m in 0..M {
                let o = out.get_unchecked_mut(out_at(m, d));
                let w = *weights.get_unchecked(m * n_rows + i);
                *o = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(w), v, _mm_set_ss(*o)));
            }
        }
    }
}

/// One weight row of a 32-element format against one activation row, row after row
/// (one stream through memory reads faster than four rows side by side). Two
/// accumulators take alternate blocks, so each block does not wait on the previous
/// one's FMA. The activation comes as `ReadyQ8_0` blocks made once per matrix.
#[inline(always)]
unsafe fn row_q8_acts<I: IsaPrimitives, F: Quants32>(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, |x: &[F::Block], act: &[ReadyQ8_0]| {
        let mut acc = [_mm256_setzero_ps(); 2];
        let pairs = x.len() / 2;
        for b in 0..pairs {
            prefetch_ahead::<I, [F::Block; 2]>(&*x.as_ptr().add(2 * b).cast::<[F::Block; 2]>());
            for (k, acc) in acc.iter_mut().enumerate() {
                let i = 2 * b + k;
                let (scale, sum) = block_sum::<I, F>(x.get_unchecked(i), act.get_unchecked(i));
                *acc = _mm256_fmadd_ps(scale, sum, *acc);
            }
        }
        if x.len() % 2 == 1 {
            let i = x.len() - 1;
            let (scale, sum) = block_sum::<I, F>(x.get_unchecked(i), act.get_unchecked(i));
            acc[0] = _mm256_fmadd_ps(scale, sum, acc[0]);
        }
        hsum_ps(_mm256_add_ps(acc[0], acc[1]))
    });
}

/// One block's products for `row_q8_acts`: the scale, and the integer sum as f32.
#[inline(always)]
unsafe fn block_sum<I: IsaPrimitives, F: Quants32>(
    w: &F::Block,
    a: &ReadyQ8_0,
) -> (__m256, __m256) {
    let (q, wd) = F::quants::<I>(w);
    let y = load(a.qs.as_ptr().cast());
    let s = if F::OFFSET != 0 {
        // The lanes are summed at the end, so the start goes in one lane only.
        let start = _mm256_zextsi128_si256(_mm_cvtsi32_si128(a.start()));
        I::dot_u8_i8(start, q, y)
    } else {
        I::dot_u8_i8(
            _mm256_setzero_si256(),
            _mm256_sign_epi8(q, q),
            _mm256_sign_epi8(y, q),
        )
    };
    let scale = _mm256_mul_ps(broadcast_f16(wd), _mm256_set1_ps(a.scale()));
    (scale, _mm256_cvtepi32_ps(s))
}

#[inline(always)]
pub(super) unsafe fn dot_rows_q8_0<I: IsaPrimitives>(rows: &[u8], act: &[u8], out: &mut [f32]) {
    row_q8_acts::<I, SignedQ8_0>(rows, act, out)
}

#[inline(always)]
pub(super) unsafe fn dot_rows_q5_0<I: IsaPrimitives>(rows: &[u8], act: &[u8], out: &mut [f32]) {
    row_q8_acts::<I, Q5_0Plus16>(rows, act, out)
}

#[inline(always)]
pub(super) unsafe fn dot_rows_q4_0<I: IsaPrimitives>(rows: &[u8], act: &[u8], out: &mut [f32]) {
    row_q8_acts::<I, Q4_0Plus8>(rows, act, out)
}

#[inline(always)]
pub(super) unsafe fn dot_rows_q4_k<I: IsaPrimitives>(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, |x, y| dot_q4_k::<I>(x, y))
}

#[inline(always)]
pub(super) unsafe fn dot_rows_q2_k<I: IsaPrimitives>(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, |x, y| tile_q2_k::<I, 1>(x, [y])[0])
}

#[inline(always)]
pub(super) unsafe fn dot_rows_q3_k<I: IsaPrimitives>(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, |x, y| tile_q3_k::<I, 1>(x, [y])[0])
}

#[inline(always)]
pub(super) unsafe fn dot_rows_q5_k<I: IsaPrimitives>(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, |x, y| dot_q5_k::<I>(x, y))
}

#[inline(always)]
pub(super) unsafe fn dot_rows_q6_k<I: IsaPrimitives>(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, |x, y| dot_q6_k::<I>(x, y))
}

#[inline(always)]
pub(super) unsafe fn dot_rows_q4_1<I: IsaPrimitives>(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, |x, y| {
        dot_with_min::<I, BlockQ4_1, 1>(x, [y])[0]
    })
}

#[inline(always)]
pub(super) unsafe fn dot_rows_q5_1<I: IsaPrimitives>(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, |x, y| {
        dot_with_min::<I, BlockQ5_1, 1>(x, [y])[0]
    })
}

#[inline(always)]
pub(super) unsafe fn dot_rows_f32(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, |x, y| dot_f32(x, y))
}

#[inline(always)]
pub(super) unsafe fn dot_rows_f16(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, |x, y| dot_f16(x, y))
}

#[inline(always)]
pub(super) unsafe fn dot_rows_bf16(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, |x, y| dot_bf16(x, y))
}

/// Rounds 32 floats times `scale` to even and packs them to bytes in order; also
/// returns the four i32 vectors before packing.
#[inline(always)]
unsafe fn round_pack(x: *const f32, scale: f32, dst: *mut i8) -> [__m256i; 4] {
    let mul = _mm256_set1_ps(scale);
    let mut ints = [_mm256_setzero_si256(); 4];
    for (k, v) in ints.iter_mut().enumerate() {
        let scaled = _mm256_mul_ps(_mm256_loadu_ps(x.add(8 * k)), mul);
        let rounded = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(scaled);
        *v = _mm256_cvtps_epi32(rounded);
    }
    let lo = _mm256_packs_epi32(ints[0], ints[1]);
    let hi = _mm256_packs_epi32(ints[2], ints[3]);
    let packed = _mm256_permutevar8x32_epi32(
        _mm256_packs_epi16(lo, hi),
        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
    );
    _mm256_storeu_si256(dst.cast(), packed);
    ints
}

#[inline(always)]
unsafe fn abs_max(x: &[f32]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_setzero_ps();
    for c in x.chunks_exact(8) {
        // maxps returns its second operand when either is NaN: with the running
        // maximum second, NaNs are skipped as the scalar references skip them.
        m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(c.as_ptr())), m);
    }
    let h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)))
}

/// Bit-identical to `q8_0::quantize`.
#[inline(always)]
pub(super) unsafe fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
    let blocks = as_blocks_mut::<BlockQ8_0>(dst);
    assert_eq!(src.len(), blocks.len() * 32);
    for (x, y) in src.chunks_exact(32).zip(blocks) {
        let (d, id) = scales(abs_max(x));
        y.d = f32_to_f16(d);
        round_pack(x.as_ptr(), id, y.qs.as_mut_ptr());
    }
}

/// Bit-identical to `q8_1::quantize`.
#[inline(always)]
pub(super) unsafe fn quantize_q8_1(src: &[f32], dst: &mut [u8]) {
    let blocks = as_blocks_mut::<BlockQ8_1>(dst);
    assert_eq!(src.len(), blocks.len() * 32);
    for (x, y) in src.chunks_exact(32).zip(blocks) {
        let (d, id) = scales(abs_max(x));
        y.d = f32_to_f16(d);
        let ints = round_pack(x.as_ptr(), id, y.qs.as_mut_ptr());
        let pairs = [
            _mm256_add_epi32(ints[0], ints[1]),
            _mm256_add_epi32(ints[2], ints[3]),
        ];
        let sum = hsum_epi32(_mm256_add_epi32(pairs[0], pairs[1]));
        y.s = f32_to_f16(d * sum as f32);
    }
}

/// Bit-identical to `q8_k::quantize`.
#[inline(always)]
pub(super) unsafe fn quantize_q8_k(src: &[f32], dst: &mut [u8]) {
    let blocks = as_blocks_mut::<BlockQ8K>(dst);
    assert_eq!(src.len(), blocks.len() * 256);
    for (x, y) in src.chunks_exact(256).zip(blocks) {
        let amax = abs_max(x);
        if amax == 0.0 {
            y.d = 0.0f32.to_le_bytes();
            y.qs = [0; 256];
            y.bsums = [0; 32];
            continue;
        }
        // The first element of largest magnitude, as the reference's strict `>` finds.
        let max = *x
            .iter()
            .find(|v| v.abs() == amax)
            .expect("amax is some |x|");
        let iscale = -127.0 / max;
        for g in 0..8 {
            let ints = round_pack(
                x.as_ptr().add(32 * g),
                iscale,
                y.qs.as_mut_ptr().add(32 * g),
            );
            for half in 0..2 {
                let s = hsum_epi32(_mm256_add_epi32(ints[2 * half], ints[2 * half + 1]));
                let at = 2 * (2 * g + half);
                y.bsums[at..at + 2].copy_from_slice(&(s as i16).to_le_bytes());
            }
        }
        y.d = (1.0 / iscale).to_le_bytes();
    }
}
