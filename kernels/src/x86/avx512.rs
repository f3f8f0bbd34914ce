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

/// One Q4_K block of sixteen rows laid out for `tile_q4_k_packed`: the quant dwords
/// transposed so lane i holds row i, and the scales and mins already multiplied out. Packing
/// a row group once per activation group, instead of transposing and unpacking in every
/// eight-activation tile, took the 2B-shaped Gemma 2 pp512 from 43 to 50 t/s at -t 1 and from
/// 89 to 106 at -t 2.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct PackedQ4K16 {
    quants: [[__m512i; 8]; 4],
    scales: [__m512; 8],
    mins: [__m512; 8],
}

#[inline(always)]
unsafe fn pack_q4_k_16_rows(rows: &[&[BlockQ4K]; 16], b: usize, packed: &mut PackedQ4K16) {
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
    packed.scales = join(
        transpose_words(std::array::from_fn(|i| unpacked[i].0)),
        transpose_words(std::array::from_fn(|i| unpacked[8 + i].0)),
        d,
    );
    packed.mins = join(
        transpose_words(std::array::from_fn(|i| unpacked[i].1)),
        transpose_words(std::array::from_fn(|i| unpacked[8 + i].1)),
        dmin,
    );
    for c in 0..4 {
        let low = transpose_dwords(std::array::from_fn(|i| {
            load(blocks[i].qs.as_ptr().add(32 * c))
        }));
        let high = transpose_dwords(std::array::from_fn(|i| {
            load(blocks[8 + i].qs.as_ptr().add(32 * c))
        }));
        for k in 0..8 {
            packed.quants[c][k] = join_halves(low[k], high[k]);
        }
    }
}

/// Sixteen Q4_K rows, packed, against `T` activation rows, one row per lane of a 512-bit
/// register: each broadcast of four activation bytes meets sixteen rows in one `vpdpbusd`.
#[inline(always)]
unsafe fn tile_q4_k_packed<const T: usize>(
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

/// Activation bytes a group may span, so that it stays in L2 while every packed row group
/// meets it: larger groups pack each row group fewer times.
const ACT_GROUP_BYTES: usize = 512 << 10;

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_tile_q4_k_wide(
    rows: &[u8],
    row_bytes: usize,
    acts: &[u8],
    n_acts: usize,
    out: &mut [f32],
) {
    let n_rows = rows.len() / row_bytes;
    let act_bytes = acts.len() / n_acts;
    let n_blocks = act_bytes / size_of::<BlockQ8K>();
    let prepared: Vec<f32> = as_blocks::<BlockQ8K>(acts)
        .iter()
        .flat_map(pair_sums)
        .collect();
    let row = |r: usize| as_blocks::<BlockQ4K>(&rows[r * row_bytes..(r + 1) * row_bytes]);
    let act = |t: usize| as_blocks::<BlockQ8K>(&acts[t * act_bytes..(t + 1) * act_bytes]);
    let extra = |t: usize| &prepared[t * 8 * n_blocks..(t + 1) * 8 * n_blocks];
    let full_rows = n_rows / 16 * 16;
    let act_group = (ACT_GROUP_BYTES / act_bytes / WIDE_ACTS).max(1) * WIDE_ACTS;
    let mut packed = vec![
        PackedQ4K16 {
            quants: [[_mm512_setzero_si512(); 8]; 4],
            scales: [_mm512_setzero_ps(); 8],
            mins: [_mm512_setzero_ps(); 8],
        };
        n_blocks
    ];
    for group in (0..n_acts).step_by(act_group) {
        let group_end = (group + act_group).min(n_acts);
        for r0 in (0..full_rows).step_by(16) {
            let rows: [&[BlockQ4K]; 16] = std::array::from_fn(|i| row(r0 + i));
            for (b, p) in packed.iter_mut().enumerate() {
                pack_q4_k_16_rows(&rows, b, p);
            }
            let mut t0 = group;
            while t0 < group_end {
                macro_rules! go {
                    ($t:expr) => {{
                        let acc = tile_q4_k_packed::<{ $t }>(
                            &packed,
                            std::array::from_fn(|i| act(t0 + i)),
                            std::array::from_fn(|i| extra(t0 + i)),
                        );
                        for (t, lanes) in acc.iter().enumerate() {
                            let at = (t0 + t) * n_rows + r0;
                            _mm512_storeu_ps(out[at..at + 16].as_mut_ptr(), *lanes);
                        }
                        t0 += $t;
                    }};
                }
                if group_end - t0 >= WIDE_ACTS {
                    go!(WIDE_ACTS)
                } else {
                    go!(1)
                }
            }
        }
        for r in full_rows..n_rows {
            let x = row(r);
            let mut t0 = group;
            while t0 + 4 <= group_end {
                let sums = tile_q4_k::<4>(x, std::array::from_fn(|i| act(t0 + i)));
                for (i, sum) in sums.into_iter().enumerate() {
                    out[(t0 + i) * n_rows + r] = sum;
                }
                t0 += 4;
            }
            for t in t0..group_end {
                out[t * n_rows + r] = tile_q4_k::<1>(x, [act(t)])[0];
            }
        }
    }
}

/// Puts the 512-bit kernels over the 256-bit ones `install` put into `table`.
pub(crate) fn install_wide(table: &mut crate::dispatch::Table) {
    table.dot_tile[GgmlType::Q4_K as usize] = Some(dot_tile_q4_k_wide);
}
