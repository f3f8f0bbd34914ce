//! AVX-512 kernels: the AVX2 algorithms on 256-bit registers with the VNNI instructions
//! `vpdpbusd` and `vpdpwssd`, which fuse the multiply-adds and the accumulation, and 512-bit
//! prompt tiles for the K-quants and the 32-element formats. On Zen 4 a 512-bit op costs two
//! 256-bit ones, so wider registers pay only where the instruction count, not the
//! multipliers, sets the pace: the rows-in-lanes prompt tiles spend a broadcast of four
//! activation bytes per `vpdpbusd`, and at 512 bits each broadcast meets sixteen rows instead
//! of eight. Generation stays at 256 bits: a 512-bit Q4_K row kernel ran 14% faster from L2
//! but 9% slower from memory, and the 2B-shaped Gemma 2's tg64 -t 1 fell from 11.9 to 10.5 t/s.

use super::kernels::{
    dot_tile_in_lanes, entry_points, pair_sums, q6_k_starts, tail_k_quant, tiles_q8_acts,
    IsaPrimitives, Lanes32x8, Q4KLanes8, Q4_0Plus8, Q5_0Plus16, Q6KLanes8, Q8_0Plus128, Quants32,
    RowsInLanes,
};
use crate::q4_k::BlockQ4K;
use crate::q6_k::BlockQ6K;
use crate::q8_0::BlockQ8_0;
use crate::q8_k::BlockQ8K;
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
}

/// Activation rows per sixteen-row (512-bit) tile: fewer would leave the register file half
/// used (2B-shaped Gemma 2 pp512 -t 1: 35.7 t/s with four, 43.3 with eight).
const WIDE_ACTS: usize = 8;

/// `dots_in_lanes` on sixteen lanes.
#[inline(always)]
unsafe fn dots_in_wide_lanes<const T: usize, const K: usize>(
    starts: [__m512i; T],
    w: &[__m512i],
    acts: [*const i8; T],
) -> [__m512i; T] {
    let mut s = starts;
    for (k, wk) in w[..K].iter().enumerate() {
        for t in 0..T {
            let four = i32::from_le_bytes(*acts[t].add(4 * k).cast::<[u8; 4]>());
            s[t] = _mm512_dpbusd_epi32(s[t], *wk, _mm512_set1_epi32(four));
        }
    }
    s
}

/// Two eight-row halves' transposed vectors joined: rows 0-7 in the low 256 bits.
#[inline(always)]
unsafe fn join_halves(low: __m256i, high: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
}

/// Sixteen Q4_K rows of one block laid out for `tile_q4_k_16_rows`: two eight-row packs
/// joined, rows 0-7 in the low 256 bits of every register. Packing once per activation group,
/// instead of transposing and unpacking in every tile of eight activations, took the
/// 2B-shaped Gemma 2 pp512 from 43 to 50 t/s at -t 1 and from 89 to 106 at -t 2.
#[derive(Clone, Copy)]
#[repr(C)]
struct PackedQ4K16 {
    quants: [[__m512i; 8]; 4],
    scales: [__m512; 8],
    mins: [__m512; 8],
}

/// Sixteen Q6_K rows of one block laid out for `tile_q6_k_16_rows`, as `PackedQ4K16`.
#[derive(Clone, Copy)]
#[repr(C)]
struct PackedQ6K16 {
    quants: [[__m512i; 8]; 8],
    scales: [__m512; 16],
}

/// A sixteen-row pack made of two of `F8`'s eight-row packs: each 256-bit vector of the
/// first (rows 0-7) becomes the low half of the matching 512-bit vector, and the second's the
/// high half. `F8::Packed` and `P16` hold nothing but vectors, the same fields in the same
/// order, 256 and 512 bits wide.
#[inline(always)]
unsafe fn pack_16_rows<F8: RowsInLanes<Avx512>, P16>(
    rows: &[&[F8::Weight]],
    b: usize,
    packed: &mut P16,
) {
    const {
        assert!(
            size_of::<P16>() == 2 * size_of::<F8::Packed>()
                && size_of::<F8::Packed>().is_multiple_of(32)
        )
    };
    let mut low: F8::Packed = std::mem::zeroed();
    let mut high: F8::Packed = std::mem::zeroed();
    F8::pack(&rows[..8], b, &mut low);
    F8::pack(&rows[8..], b, &mut high);
    let low = (&low as *const F8::Packed).cast::<__m256i>();
    let high = (&high as *const F8::Packed).cast::<__m256i>();
    let joined = (packed as *mut P16).cast::<__m512i>();
    for k in 0..size_of::<F8::Packed>() / 32 {
        *joined.add(k) = join_halves(*low.add(k), *high.add(k));
    }
}

/// `tile_q4_k_rows_in_lanes` on sixteen rows: each broadcast of four activation bytes meets
/// sixteen rows in one `vpdpbusd` instead of eight.
#[inline(always)]
unsafe fn tile_q4_k_16_rows<const T: usize>(
    packed: &[PackedQ4K16],
    acts: [&[BlockQ8K]; T],
    pair_sums: [&[f32]; T],
) -> [__m512; T] {
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); T];
    for (b, p) in packed.iter().enumerate() {
        let mut sums = [_mm512_setzero_ps(); T];
        for t in 0..T {
            let pairs = pair_sums[t].as_ptr().add(8 * b);
            for (j, min) in p.mins.iter().enumerate() {
                sums[t] = _mm512_fnmadd_ps(*min, _mm512_set1_ps(*pairs.add(j)), sums[t]);
            }
        }
        for c in 0..4 {
            for half in 0..2 {
                let j = 2 * c + half;
                let w: [__m512i; 8] = std::array::from_fn(|k| {
                    let raw = p.quants[c][k];
                    let q = if half == 0 {
                        raw
                    } else {
                        _mm512_srli_epi16::<4>(raw)
                    };
                    _mm512_and_si512(q, m4)
                });
                let s = dots_in_wide_lanes::<T, 8>(
                    [_mm512_setzero_si512(); T],
                    &w,
                    std::array::from_fn(|t| acts[t].get_unchecked(b).qs.as_ptr().add(32 * j)),
                );
                for t in 0..T {
                    sums[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[t]), p.scales[j], sums[t]);
                }
            }
        }
        for t in 0..T {
            let ad = _mm512_set1_ps(acts[t].get_unchecked(b).d());
            acc[t] = _mm512_fmadd_ps(sums[t], ad, acc[t]);
        }
    }
    acc
}

/// `tile_q6_k_rows_in_lanes` on sixteen rows.
#[inline(always)]
unsafe fn tile_q6_k_16_rows<const T: usize>(
    packed: &[PackedQ6K16],
    acts: [&[BlockQ8K]; T],
    starts: [&[i32]; T],
) -> [__m512; T] {
    let mut acc = [_mm512_setzero_ps(); T];
    for (b, p) in packed.iter().enumerate() {
        let mut sums = [_mm512_setzero_ps(); T];
        for (chunk, w) in p.quants.iter().enumerate() {
            for sub in 0..2 {
                let s_index = 2 * chunk + sub;
                let s = dots_in_wide_lanes::<T, 4>(
                    std::array::from_fn(|t| {
                        _mm512_set1_epi32(*starts[t].get_unchecked(16 * b + s_index))
                    }),
                    &w[4 * sub..],
                    std::array::from_fn(|t| acts[t].get_unchecked(b).qs.as_ptr().add(16 * s_index)),
                );
                for t in 0..T {
                    sums[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[t]), p.scales[s_index], sums[t]);
                }
            }
        }
        for t in 0..T {
            let ad = _mm512_set1_ps(acts[t].get_unchecked(b).d());
            acc[t] = _mm512_fmadd_ps(sums[t], ad, acc[t]);
        }
    }
    acc
}

/// Sixteen rows of one block of a 32-element format, laid out for `tile_32_16_rows` as
/// `Packed32x8` is for eight.
#[derive(Clone, Copy)]
#[repr(C)]
struct Packed32x16 {
    quants: [__m512i; 8],
    scales: __m512,
}

/// `tile_32_rows_in_lanes` on sixteen rows.
#[inline(always)]
unsafe fn tile_32_16_rows<const T: usize>(
    packed: &[Packed32x16],
    acts: [&[BlockQ8_0]; T],
    offset_sums: [&[i32]; T],
) -> [__m512; T] {
    let mut acc = [_mm512_setzero_ps(); T];
    for (b, p) in packed.iter().enumerate() {
        let mut starts = [_mm512_setzero_si512(); T];
        let mut qs = [std::ptr::null(); T];
        for t in 0..T {
            starts[t] = _mm512_set1_epi32(*offset_sums[t].get_unchecked(b));
            qs[t] = acts[t].get_unchecked(b).qs.as_ptr();
        }
        let sums = dots_in_wide_lanes::<T, 8>(starts, &p.quants, qs);
        for t in 0..T {
            let d = i16::from_le_bytes(acts[t].get_unchecked(b).d);
            let scale = _mm512_mul_ps(p.scales, _mm512_cvtph_ps(_mm256_set1_epi16(d)));
            acc[t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sums[t]), acc[t]);
        }
    }
    acc
}

/// Q4_K's sixteen-row tiles.
struct Q4KLanes16;

/// Q6_K's sixteen-row tiles.
struct Q6KLanes16;

/// The sixteen-row tiles of a 32-element format read as `F`.
struct Lanes32x16<F>(std::marker::PhantomData<F>);

impl RowsInLanes<Avx512> for Q4KLanes16 {
    type Weight = BlockQ4K;
    type Act = BlockQ8K;
    type Packed = PackedQ4K16;
    type Extra = f32;
    type Sums = __m512;
    const LANES: usize = 16;
    const EXTRA_PER_BLOCK: usize = 8;

    fn extra(a: &BlockQ8K) -> impl Iterator<Item = f32> {
        pair_sums(a)
    }

    #[inline(always)]
    unsafe fn pack(rows: &[&[BlockQ4K]], b: usize, packed: &mut PackedQ4K16) {
        pack_16_rows::<Q4KLanes8, _>(rows, b, packed)
    }

    #[inline(always)]
    unsafe fn tile<const T: usize>(
        packed: &[PackedQ4K16],
        acts: [&[BlockQ8K]; T],
        extra: [&[f32]; T],
    ) -> [__m512; T] {
        tile_q4_k_16_rows::<T>(packed, acts, extra)
    }

    #[inline(always)]
    unsafe fn store(out: *mut f32, sums: __m512) {
        _mm512_storeu_ps(out, sums)
    }

    #[inline(always)]
    unsafe fn tail(
        rows: &[u8],
        row_bytes: usize,
        acts: &[u8],
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        tail_k_quant::<Avx512, BlockQ4K>(rows, row_bytes, acts, n_acts, out, out_stride)
    }
}

impl RowsInLanes<Avx512> for Q6KLanes16 {
    type Weight = BlockQ6K;
    type Act = BlockQ8K;
    type Packed = PackedQ6K16;
    type Extra = i32;
    type Sums = __m512;
    const LANES: usize = 16;
    const EXTRA_PER_BLOCK: usize = 16;

    fn extra(a: &BlockQ8K) -> impl Iterator<Item = i32> {
        q6_k_starts(a)
    }

    #[inline(always)]
    unsafe fn pack(rows: &[&[BlockQ6K]], b: usize, packed: &mut PackedQ6K16) {
        pack_16_rows::<Q6KLanes8, _>(rows, b, packed)
    }

    #[inline(always)]
    unsafe fn tile<const T: usize>(
        packed: &[PackedQ6K16],
        acts: [&[BlockQ8K]; T],
        extra: [&[i32]; T],
    ) -> [__m512; T] {
        tile_q6_k_16_rows::<T>(packed, acts, extra)
    }

    #[inline(always)]
    unsafe fn store(out: *mut f32, sums: __m512) {
        _mm512_storeu_ps(out, sums)
    }

    #[inline(always)]
    unsafe fn tail(
        rows: &[u8],
        row_bytes: usize,
        acts: &[u8],
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        tail_k_quant::<Avx512, BlockQ6K>(rows, row_bytes, acts, n_acts, out, out_stride)
    }
}

impl<F: Quants32> RowsInLanes<Avx512> for Lanes32x16<F> {
    type Weight = F::Block;
    type Act = BlockQ8_0;
    type Packed = Packed32x16;
    type Extra = i32;
    type Sums = __m512;
    const LANES: usize = 16;
    const EXTRA_PER_BLOCK: usize = 1;

    fn extra(a: &BlockQ8_0) -> impl Iterator<Item = i32> {
        <Lanes32x8<F> as RowsInLanes<Avx512>>::extra(a)
    }

    #[inline(always)]
    unsafe fn pack(rows: &[&[F::Block]], b: usize, packed: &mut Packed32x16) {
        pack_16_rows::<Lanes32x8<F>, _>(rows, b, packed)
    }

    #[inline(always)]
    unsafe fn tile<const T: usize>(
        packed: &[Packed32x16],
        acts: [&[BlockQ8_0]; T],
        extra: [&[i32]; T],
    ) -> [__m512; T] {
        tile_32_16_rows::<T>(packed, acts, extra)
    }

    #[inline(always)]
    unsafe fn store(out: *mut f32, sums: __m512) {
        _mm512_storeu_ps(out, sums)
    }

    #[inline(always)]
    unsafe fn tail(
        rows: &[u8],
        row_bytes: usize,
        acts: &[u8],
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        tiles_q8_acts::<Avx512, F>(rows, row_bytes, acts, n_acts, out, out_stride)
    }
}

/// The entry point of the sixteen-row tiles of `F`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_tile_wide<F: RowsInLanes<Avx512>>(
    rows: &[u8],
    row_bytes: usize,
    acts: &[u8],
    n_acts: usize,
    out: &mut [f32],
) {
    dot_tile_in_lanes::<Avx512, F, WIDE_ACTS>(rows, row_bytes, acts, n_acts, out)
}

/// Puts the 512-bit kernels over the 256-bit ones `install` put into `table`.
pub(crate) fn install_wide(table: &mut crate::dispatch::Table) {
    table.dot_tile[GgmlType::Q4_K as usize] = Some(dot_tile_wide::<Q4KLanes16>);
    table.dot_tile[GgmlType::Q6_K as usize] = Some(dot_tile_wide::<Q6KLanes16>);
    table.dot_tile[GgmlType::Q8_0 as usize] = Some(dot_tile_wide::<Lanes32x16<Q8_0Plus128>>);
    table.dot_tile[GgmlType::Q5_0 as usize] = Some(dot_tile_wide::<Lanes32x16<Q5_0Plus16>>);
    table.dot_tile[GgmlType::Q4_0 as usize] = Some(dot_tile_wide::<Lanes32x16<Q4_0Plus8>>);
}
