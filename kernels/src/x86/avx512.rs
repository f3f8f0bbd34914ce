//! AVX-512 kernels: the AVX2 algorithms on 256-bit registers with the VNNI instructions
//! `vpdpbusd` and `vpdpwssd`, which fuse the multiply-adds and the accumulation, and 512-bit
//! prompt tiles for the K-quants and the 32-element formats. On Zen 4 a 512-bit op costs two
//! 256-bit ones, so wider registers pay only where the instruction count, not the
//! multipliers, sets the pace: the rows-in-lanes prompt tiles spend a broadcast of four
//! activation bytes per `vpdpbusd`, and at 512 bits each broadcast meets sixteen rows instead
//! of eight. Generation stays at 256 bits: a 512-bit Q4_K row kernel ran 14% faster from L2
//! but 9% slower from memory, and the 2B-shaped Gemma 2's tg64 -t 1 fell from 11.9 to 10.5 t/s.

use super::kernels::{
    dot_tile_in_lanes, entry_points, GroupedLanes, GroupedMinLanes, InLanes, IsaPrimitives,
    LaneFormat, Lanes8, MinInLanes, Q4_0Plus8, Q5_0Plus16, Q8_0Plus128, RowLanes, SubBlockLanes,
};
use crate::q2_k::BlockQ2K;
use crate::q3_k::BlockQ3K;
use crate::q4_0::BlockQ4_0Group;
use crate::q4_1::{BlockQ4_1, BlockQ4_1Group};
use crate::q4_k::{BlockQ4K, BlockQ4KGroup};
use crate::q5_0::BlockQ5_0Group;
use crate::q5_1::{BlockQ5_1, BlockQ5_1Group};
use crate::q5_k::{BlockQ5K, BlockQ5KGroup};
use crate::q6_k::{BlockQ6K, BlockQ6KGroup};
use crate::q8_0::BlockQ8_0Group;
use crate::types::GgmlType;
use std::arch::x86_64::*;
use std::mem::size_of;

/// AVX-512 with BW, VL and VNNI (and AVX2, FMA and F16C beside it).
pub(crate) struct Avx512;

// Eight activation rows per eight-row tile: eight accumulators and eight transposed quant
// registers fit the 32 vector registers with room to spare. Four queries per key (Gemma 3's
// and Llama 3's four query heads per key head): the 32 registers hold their sixteen
// accumulators.
entry_points!(
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    Avx512,
    row_lane_acts: 8,
    attention_queries: 4
);

impl IsaPrimitives for Avx512 {
    /// `vpdpbusd` adds its four byte products into 32 bits: any unsigned byte times any
    /// signed byte is exact.
    const UNSATURATED_BYTE_PRODUCTS: bool = true;

    /// On Zen 4 the grouped kernels read memory at 32-34 GB/s from DRAM without it (Q4_K and
    /// Q6_K, 2304 columns, one thread), and the row kernels keep the prefetches measured
    /// there (`PREFETCH_BYTES`). Not yet measured on Intel's AVX-512 cores.
    const PREFETCH_SPAN_BYTES: usize = 0;

    #[inline(always)]
    unsafe fn dot_u8_i8(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, s)
    }

    #[inline(always)]
    unsafe fn madd_acc(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_dpwssd_epi32(acc, a, b)
    }

    /// One masked add.
    #[inline(always)]
    unsafe fn add_16_where_set(q: __m256i, bits: [u8; 4]) -> __m256i {
        _mm256_mask_add_epi8(q, u32::from_le_bytes(bits), q, _mm256_set1_epi8(16))
    }

    /// Four products of bytes never overflow 32 bits within a block.
    #[inline(always)]
    fn run_len(_max_quant: i32) -> usize {
        usize::MAX
    }

    #[inline(always)]
    unsafe fn add_run_products(run: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(run, u, s)
    }

    #[inline(always)]
    unsafe fn add_scaled_run(acc: __m256i, run: __m256i, scale: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_mullo_epi32(run, scale))
    }

    #[inline(always)]
    unsafe fn run_scale(scale: __m256i) -> __m256i {
        scale
    }
}

/// Activation rows per sixteen-row (512-bit) tile: fewer would leave the register file half
/// used (2B-shaped Gemma 2 pp512 -t 1: 35.7 t/s with four, 43.3 with eight).
const WIDE_ACTS: usize = 8;

/// Sixteen rows in 512-bit registers.
struct Lanes16;

impl RowLanes for Lanes16 {
    const LANES: usize = 16;
    type Ints = __m512i;
    type Floats = __m512;

    #[inline(always)]
    unsafe fn zero_ints() -> __m512i {
        _mm512_setzero_si512()
    }

    #[inline(always)]
    unsafe fn zero_floats() -> __m512 {
        _mm512_setzero_ps()
    }

    #[inline(always)]
    unsafe fn splat_i32(x: i32) -> __m512i {
        _mm512_set1_epi32(x)
    }

    #[inline(always)]
    unsafe fn splat_f32(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }

    #[inline(always)]
    unsafe fn splat_f16(x: [u8; 2]) -> __m512 {
        _mm512_cvtph_ps(_mm256_set1_epi16(i16::from_le_bytes(x)))
    }

    #[inline(always)]
    unsafe fn low_nibbles(q: __m512i) -> __m512i {
        _mm512_and_si512(q, _mm512_set1_epi8(0x0F))
    }

    #[inline(always)]
    unsafe fn high_nibbles(q: __m512i) -> __m512i {
        _mm512_and_si512(_mm512_srli_epi16::<4>(q), _mm512_set1_epi8(0x0F))
    }

    #[inline(always)]
    unsafe fn add_byte_products(acc: __m512i, quants: __m512i, four: i32) -> __m512i {
        _mm512_dpbusd_epi32(acc, quants, _mm512_set1_epi32(four))
    }

    #[inline(always)]
    unsafe fn add_word_products(acc: __m512i, words: __m512i, two: i32) -> __m512i {
        _mm512_dpwssd_epi32(acc, words, _mm512_set1_epi32(two))
    }

    #[inline(always)]
    unsafe fn to_floats(x: __m512i) -> __m512 {
        _mm512_cvtepi32_ps(x)
    }

    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }

    #[inline(always)]
    unsafe fn mul_add(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }

    #[inline(always)]
    unsafe fn neg_mul_add(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fnmadd_ps(a, b, c)
    }

    #[inline(always)]
    unsafe fn store(out: *mut f32, x: __m512) {
        _mm512_storeu_ps(out, x)
    }

    /// Two eight-row packs joined: each 256-bit vector of the first (rows 0-7) becomes the
    /// low half of the matching 512-bit vector, and the second's the high half. Both packs
    /// hold nothing but vectors, the same fields in the same order, 256 and 512 bits wide.
    /// Packing once per activation group, instead of transposing and unpacking in every
    /// tile of eight activations, took the 2B-shaped Gemma 2 pp512 from 43 to 50 t/s at -t 1
    /// and from 89 to 106 at -t 2.
    #[inline(always)]
    unsafe fn pack<F: LaneFormat>(
        stripes: &[&[F::Weight]],
        b: usize,
        packed: &mut F::Packed<Self>,
    ) {
        type Half<F> = <F as LaneFormat>::Packed<Lanes8<Avx512>>;
        const {
            assert!(
                size_of::<F::Packed<Self>>() == 2 * size_of::<Half<F>>()
                    && size_of::<Half<F>>().is_multiple_of(32)
            )
        };
        let mut low: Half<F> = std::mem::zeroed();
        let mut high: Half<F> = std::mem::zeroed();
        let (first, second) = stripes.split_at(8 / F::STRIPE_ROWS);
        F::pack_8::<Avx512>(first, b, &mut low);
        F::pack_8::<Avx512>(second, b, &mut high);
        let low = (&low as *const Half<F>).cast::<__m256i>();
        let high = (&high as *const Half<F>).cast::<__m256i>();
        let joined = (packed as *mut F::Packed<Self>).cast::<__m512i>();
        for k in 0..size_of::<Half<F>>() / 32 {
            let low_half = _mm512_castsi256_si512(*low.add(k));
            *joined.add(k) = _mm512_inserti64x4::<1>(low_half, *high.add(k));
        }
    }
}

/// The entry point of the sixteen-row tiles of `F`: each broadcast of four activation bytes
/// meets sixteen rows in one `vpdpbusd` instead of eight.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_tile_wide<F: LaneFormat>(
    rows: &[u8],
    row_bytes: usize,
    acts: &[u8],
    n_acts: usize,
    out: &mut [f32],
) {
    dot_tile_in_lanes::<Avx512, F, Lanes16, WIDE_ACTS>(rows, row_bytes, acts, n_acts, out)
}

/// Puts the 512-bit kernels over the 256-bit ones `install` put into `table`, and the grouped
/// Q8_0 kernels: VNNI only, as grouped Q8_0's quants are stored plus 128 (see `Grouped32`).
pub(crate) fn install_wide(table: &mut crate::dispatch::Table) {
    table.dot_tile[GgmlType::Q2_K as usize] = Some(dot_tile_wide::<SubBlockLanes<BlockQ2K>>);
    table.dot_tile[GgmlType::Q3_K as usize] = Some(dot_tile_wide::<SubBlockLanes<BlockQ3K>>);
    table.dot_tile[GgmlType::Q4_K as usize] = Some(dot_tile_wide::<BlockQ4K>);
    table.dot_tile[GgmlType::Q5_K as usize] = Some(dot_tile_wide::<BlockQ5K>);
    table.dot_tile[GgmlType::Q4_1 as usize] = Some(dot_tile_wide::<MinInLanes<BlockQ4_1>>);
    table.dot_tile[GgmlType::Q5_1 as usize] = Some(dot_tile_wide::<MinInLanes<BlockQ5_1>>);
    table.dot_tile[GgmlType::Q6_K as usize] = Some(dot_tile_wide::<SubBlockLanes<BlockQ6K>>);
    table.dot_groups_tile[GgmlType::Q4_K as usize] = Some(dot_tile_wide::<BlockQ4KGroup>);
    table.dot_groups_tile[GgmlType::Q5_K as usize] = Some(dot_tile_wide::<BlockQ5KGroup>);
    table.dot_groups_tile[GgmlType::Q6_K as usize] = Some(dot_tile_wide::<BlockQ6KGroup>);
    table.dot_groups[GgmlType::Q8_0 as usize] = Some(dot_groups::<GroupedLanes<BlockQ8_0Group>>);
    table.prepare_groups[GgmlType::Q8_0 as usize] = Some(crate::x86::ready::<Q8_0Plus128>);
    table.dot_groups_tile[GgmlType::Q8_0 as usize] =
        Some(dot_tile_wide::<GroupedLanes<BlockQ8_0Group>>);
    table.dot_groups_tile[GgmlType::Q5_0 as usize] =
        Some(dot_tile_wide::<GroupedLanes<BlockQ5_0Group>>);
    table.dot_groups_tile[GgmlType::Q4_0 as usize] =
        Some(dot_tile_wide::<GroupedLanes<BlockQ4_0Group>>);
    table.dot_groups_tile[GgmlType::Q4_1 as usize] =
        Some(dot_tile_wide::<GroupedMinLanes<BlockQ4_1Group>>);
    table.dot_groups_tile[GgmlType::Q5_1 as usize] =
        Some(dot_tile_wide::<GroupedMinLanes<BlockQ5_1Group>>);
    table.dot_tile[GgmlType::Q8_0 as usize] = Some(dot_tile_wide::<InLanes<Q8_0Plus128>>);
    table.dot_tile[GgmlType::Q5_0 as usize] = Some(dot_tile_wide::<InLanes<Q5_0Plus16>>);
    table.dot_tile[GgmlType::Q4_0 as usize] = Some(dot_tile_wide::<InLanes<Q4_0Plus8>>);
}
