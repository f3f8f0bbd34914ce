//! AVX-512 kernels: the AVX2 algorithms on 256-bit registers with the VNNI instructions
//! `vpdpbusd` and `vpdpwssd`, which fuse the multiply-adds and the accumulation, and 512-bit
//! prompt tiles for Q4_K. On Zen 4 a 512-bit op costs two 256-bit ones, so wider registers
//! pay only where the instruction count, not the multipliers, sets the pace: the generation
//! kernels are bound by memory bandwidth, but the rows-in-lanes prompt tiles spend a
//! broadcast of four activation bytes per `vpdpbusd`, and at 512 bits each broadcast meets
//! sixteen rows instead of eight.

/// Activation rows per eight-row tile: eight accumulators and eight transposed quant registers
/// fit the 32 vector registers with room to spare.
const ROW_LANE_ACTS: usize = 8;

/// Activation rows per sixteen-row (512-bit) tile: fewer would leave the register file half
/// used (2B-shaped Gemma 2 pp512 -t 1: 35.7 t/s with four, 43.3 with eight).
const WIDE_ACTS: usize = 8;

/// `vpdpbusd` adds its four byte products into 32 bits: any unsigned byte times any
/// signed byte is exact.
const UNSATURATED_BYTE_PRODUCTS: bool = true;

super::kernels::x86_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_u8_i8(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn madd_acc(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    _mm256_dpwssd_epi32(acc, a, b)
}

/// Adds 16 to byte j of `q` where bit j of the little-endian `bits` is set: one masked add.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn add_16_where_set(q: __m256i, bits: [u8; 4]) -> __m256i {
    _mm256_mask_add_epi8(q, u32::from_le_bytes(bits), q, _mm256_set1_epi8(16))
}

/// `dots_in_lanes` on sixteen lanes.
#[inline(always)]
unsafe fn dots_in_wide_lanes<const T: usize, const K: usize>(
    starts: [__m512i; T],
    w: &[__m512i],
    acts: [*const i8; T],
) -> [__m512i; T] {
    let mut s = starts;
    for k in 0..K {
        for t in 0..T {
            let four = i32::from_le_bytes(*acts[t].add(4 * k).cast::<[u8; 4]>());
            s[t] = _mm512_dpbusd_epi32(s[t], w[k], _mm512_set1_epi32(four));
        }
    }
    s
}

/// Two eight-row halves' transposed vectors joined: rows 0-7 in the low 256 bits.
#[inline(always)]
unsafe fn join_halves(low: __m256i, high: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
}

/// Sixteen f16s, one per row, to f32.
#[inline(always)]
unsafe fn f16_lanes<B>(blocks: &[&B; 16], f: impl Fn(&B) -> [u8; 2]) -> __m512 {
    let h: [u16; 16] = std::array::from_fn(|i| u16::from_le_bytes(f(blocks[i])));
    _mm512_cvtph_ps(_mm256_loadu_si256(h.as_ptr().cast()))
}

/// Sixteen Q4_K rows against `T` activation rows, one row per lane of a 512-bit register: as
/// `tile_q4_k_rows_in_lanes`, with each broadcast activation word meeting sixteen rows in one
/// `vpdpbusd` instead of eight. The two 256-bit halves are transposed as there and joined.
#[inline(always)]
unsafe fn tile_q4_k_16_rows<const T: usize>(
    rows: [&[BlockQ4K]; 16],
    acts: [&[BlockQ8K]; T],
    pair_sums: [&[f32]; T],
) -> [__m512; T] {
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..rows[0].len() {
        let blocks: [&BlockQ4K; 16] = std::array::from_fn(|i| rows[i].get_unchecked(b));
        let d = f16_lanes(&blocks, |x| x.d);
        let dmin = f16_lanes(&blocks, |x| x.dmin);
        let unpacked: [(__m128i, __m128i); 16] =
            std::array::from_fn(|i| scales_mins_k(&blocks[i].scales));
        let join = |lo: [__m128i; 8], hi: [__m128i; 8], by: __m512| -> [__m512; 8] {
            std::array::from_fn(|j| {
                let words = _mm256_set_m128i(hi[j], lo[j]);
                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(words)), by)
            })
        };
        let scales = join(
            transpose_words(std::array::from_fn(|i| unpacked[i].0)),
            transpose_words(std::array::from_fn(|i| unpacked[8 + i].0)),
            d,
        );
        let mins = join(
            transpose_words(std::array::from_fn(|i| unpacked[i].1)),
            transpose_words(std::array::from_fn(|i| unpacked[8 + i].1)),
            dmin,
        );
        let mut sums = [_mm512_setzero_ps(); T];
        for t in 0..T {
            let pairs = pair_sums[t].as_ptr().add(8 * b);
            for (j, min) in mins.iter().enumerate() {
                sums[t] = _mm512_fnmadd_ps(*min, _mm512_set1_ps(*pairs.add(j)), sums[t]);
            }
        }
        for c in 0..4 {
            let low = transpose_dwords(std::array::from_fn(|i| {
                load(blocks[i].qs.as_ptr().add(32 * c))
            }));
            let high = transpose_dwords(std::array::from_fn(|i| {
                load(blocks[8 + i].qs.as_ptr().add(32 * c))
            }));
            let raw: [__m512i; 8] = std::array::from_fn(|k| join_halves(low[k], high[k]));
            for half in 0..2 {
                let j = 2 * c + half;
                let w: [__m512i; 8] = std::array::from_fn(|k| {
                    let q = if half == 0 {
                        raw[k]
                    } else {
                        _mm512_srli_epi16::<4>(raw[k])
                    };
                    _mm512_and_si512(q, m4)
                });
                let s = dots_in_wide_lanes::<T, 8>(
                    [_mm512_setzero_si512(); T],
                    &w,
                    std::array::from_fn(|t| acts[t].get_unchecked(b).qs.as_ptr().add(32 * j)),
                );
                for t in 0..T {
                    sums[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[t]), scales[j], sums[t]);
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

k_quant_tiles!(
    dot_tile_q4_k_wide,
    BlockQ4K,
    tile_q4_k_16_rows rows 16 by WIDE_ACTS,
    _mm512_storeu_ps,
    tile_q4_k,
    8,
    pair_sums
);

/// Puts the 512-bit kernels over the 256-bit ones `install` put into `table`.
pub(crate) fn install_wide(table: &mut crate::dispatch::Table) {
    table.dot_tile[GgmlType::Q4_K as usize] = Some(dot_tile_q4_k_wide);
}
