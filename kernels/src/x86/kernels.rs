//! The x86 kernel bodies, written once and compiled for each x86 ISA.
//!
//! `x86_kernels!("features")` expands to the kernels with `#[target_feature(enable =
//! "features")]` and an `install` function. The invoking module supplies two integer
//! primitives, the only place where AVX2 and AVX-512 VNNI differ:
//! - `dot_u8_i8(acc, u, s)`: adds to each i32 lane of `acc` the sum of the four products of
//!   unsigned bytes `u` and signed bytes `s` in that lane (no intermediate saturation for the
//!   ranges used here: |u| ≤ 128, |s| ≤ 127);
//! - `madd_acc(acc, a, b)`: adds to each i32 lane the two products of i16 pairs.

macro_rules! x86_kernels {
    ($features:literal) => {
        use crate::bf16::Bf16;
        use crate::block::{as_blocks, as_blocks_mut, f32_to_f16, for_each_row, Block};
        use crate::dispatch::Table;
        use crate::f16::F16;
        use crate::f32::F32;
        use crate::q4_0::BlockQ4_0;
        use crate::q4_1::BlockQ4_1;
        use crate::q4_k::{unpack_scales_mins, BlockQ4K};
        use crate::q5_0::BlockQ5_0;
        use crate::q5_k::BlockQ5K;
        use crate::q6_k::BlockQ6K;
        use crate::q8_0::{scales, BlockQ8_0};
        use crate::q8_1::BlockQ8_1;
        use crate::q8_k::BlockQ8K;
        use crate::types::GgmlType;
        use std::arch::x86_64::*;

        /// Puts this ISA's kernels into `table`.
        pub(crate) fn install(table: &mut Table) {
            table.dot_rows[GgmlType::Q4_K as usize] = Some(dot_rows_q4_k);
            table.dot_rows[GgmlType::Q5_K as usize] = Some(dot_rows_q5_k);
            table.dot_rows[GgmlType::Q6_K as usize] = Some(dot_rows_q6_k);
            table.dot_rows[GgmlType::Q8_0 as usize] = Some(dot_rows_q8_0);
            table.dot_rows[GgmlType::Q4_0 as usize] = Some(dot_rows_q4_0);
            table.dot_rows[GgmlType::Q5_0 as usize] = Some(dot_rows_q5_0);
            table.dot_rows[GgmlType::Q4_1 as usize] = Some(dot_rows_q4_1);
            table.dot_rows[GgmlType::F32 as usize] = Some(dot_rows_f32);
            table.dot_rows[GgmlType::F16 as usize] = Some(dot_rows_f16);
            table.dot_rows[GgmlType::BF16 as usize] = Some(dot_rows_bf16);
            table.quantize[GgmlType::Q8_0 as usize] = Some(quantize_q8_0);
            table.quantize[GgmlType::Q8_K as usize] = Some(quantize_q8_k);
            table.accumulate_f16_rows = accumulate_f16_rows;
            table.dot_tile[GgmlType::Q8_0 as usize] = Some(dot_tile_q8_0);
            table.dot_tile[GgmlType::Q5_0 as usize] = Some(dot_tile_q5_0);
            table.dot_tile[GgmlType::Q4_0 as usize] = Some(dot_tile_q4_0);
            table.dot_tile[GgmlType::Q4_K as usize] = Some(dot_tile_q4_k);
            table.dot_tile[GgmlType::Q6_K as usize] = Some(dot_tile_q6_k);
        }

        /// Two f16s to f32 with F16C (`half` would take its software path here). Both go in
        /// one `vmovd`: converting one alone, LLVM inserts it into whatever register is free,
        /// often a live accumulator, and that false dependency chains every block behind the
        /// previous one.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn halves(a: [u8; 2], b: [u8; 2]) -> (f32, f32) {
            let bits = u16::from_le_bytes(a) as u32 | (u16::from_le_bytes(b) as u32) << 16;
            let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
            (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
        }

        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn hsum_ps(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
        }

        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn hsum_epi32(v: __m256i) -> i32 {
            let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
            _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
        }

        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn load(p: *const u8) -> __m256i {
            _mm256_loadu_si256(p.cast())
        }

        /// Byte j is 0xFF where bit j of the little-endian `bits` is set.
        #[inline]
        #[target_feature(enable = $features)]
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

        /// The 32 nibbles of a Q4_0/Q4_1 block in element order (low nibbles first).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
            let q = _mm_loadu_si128(qs.as_ptr().cast());
            let both = _mm256_set_m128i(_mm_srli_epi16::<4>(q), q);
            _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
        }

        /// Σ x·y of two signed byte vectors, per i32 lane (`x` must not be −128 where `y` is).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn dot_i8(x: __m256i, y: __m256i) -> __m256i {
            dot_u8_i8(
                _mm256_setzero_si256(),
                _mm256_sign_epi8(x, x),
                _mm256_sign_epi8(y, x),
            )
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_q4_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
            let m4 = _mm256_set1_epi8(0x0F);
            let mut acc = _mm256_setzero_ps();
            let mut acc_m = _mm_setzero_ps();
            for (xb, yb) in x.iter().zip(y) {
                let (xd, xdmin) = halves(xb.d, xb.dmin);
                let d = xd * yb.d();
                let dmin = -xdmin * yb.d();
                let (sc, mins) = unpack_scales_mins(&xb.scales);

                let bsums = load(yb.bsums.as_ptr());
                let pair_sums = _mm_hadd_epi16(
                    _mm256_castsi256_si128(bsums),
                    _mm256_extracti128_si256::<1>(bsums),
                );
                let mins16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(mins.as_ptr().cast()));
                let min_prod = _mm_madd_epi16(mins16, pair_sums);
                acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(min_prod), acc_m);

                let sc16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(sc.as_ptr().cast()));
                let sc16 = _mm256_set_m128i(sc16, sc16);
                let mut sumi = _mm256_setzero_si256();
                for c in 0..4 {
                    let q4 = load(xb.qs.as_ptr().add(32 * c));
                    let lo = _mm256_and_si256(q4, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4);
                    let p_lo = _mm256_maddubs_epi16(lo, load(yb.qs.as_ptr().add(64 * c).cast()));
                    let p_hi =
                        _mm256_maddubs_epi16(hi, load(yb.qs.as_ptr().add(64 * c + 32).cast()));
                    let j = 2 * c as i16;
                    let s_lo =
                        _mm256_shuffle_epi8(sc16, _mm256_set1_epi16((2 * j + 1) << 8 | 2 * j));
                    let s_hi = _mm256_shuffle_epi8(
                        sc16,
                        _mm256_set1_epi16((2 * j + 3) << 8 | (2 * j + 2)),
                    );
                    sumi = madd_acc(sumi, p_lo, s_lo);
                    sumi = madd_acc(sumi, p_hi, s_hi);
                }
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
            hsum_ps(acc) + _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)))
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_q5_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
            let m4 = _mm256_set1_epi8(0x0F);
            let one = _mm256_set1_epi8(1);
            let two = _mm256_set1_epi8(2);
            let mut acc = _mm256_setzero_ps();
            let mut acc_m = _mm_setzero_ps();
            for (xb, yb) in x.iter().zip(y) {
                let (xd, xdmin) = halves(xb.d, xb.dmin);
                let d = xd * yb.d();
                let dmin = -xdmin * yb.d();
                let (sc, mins) = unpack_scales_mins(&xb.scales);

                let bsums = load(yb.bsums.as_ptr());
                let pair_sums = _mm_hadd_epi16(
                    _mm256_castsi256_si128(bsums),
                    _mm256_extracti128_si256::<1>(bsums),
                );
                let mins16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(mins.as_ptr().cast()));
                let min_prod = _mm_madd_epi16(mins16, pair_sums);
                acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(min_prod), acc_m);

                let sc16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(sc.as_ptr().cast()));
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
                    let p_hi =
                        _mm256_maddubs_epi16(hi, load(yb.qs.as_ptr().add(64 * c + 32).cast()));
                    let j = 2 * c as i16;
                    let s_lo =
                        _mm256_shuffle_epi8(sc16, _mm256_set1_epi16((2 * j + 1) << 8 | 2 * j));
                    let s_hi = _mm256_shuffle_epi8(
                        sc16,
                        _mm256_set1_epi16((2 * j + 3) << 8 | (2 * j + 2)),
                    );
                    sumi = madd_acc(sumi, p_lo, s_lo);
                    sumi = madd_acc(sumi, p_hi, s_hi);
                }
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
            hsum_ps(acc) + _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)))
        }

        /// Multiplies the unsigned 6-bit quants (0..63) and subtracts 32·Σ sc·bsum once per
        /// block instead of re-centring every quant.
        #[target_feature(enable = $features)]
        unsafe fn dot_q6_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
            let m4 = _mm256_set1_epi8(0x0F);
            let m2 = _mm256_set1_epi8(0x30);
            let mut acc = _mm256_setzero_ps();
            for (xb, yb) in x.iter().zip(y) {
                let d = halves(xb.d, xb.d).0 * yb.d();
                let sc8 = _mm_loadu_si128(xb.scales.as_ptr().cast());
                let sc16 = _mm256_cvtepi8_epi16(sc8);
                let offset =
                    _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, load(yb.bsums.as_ptr())));
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
                            _mm_set1_epi16((2 * w + 3) << 8 | (2 * w + 2)),
                            _mm_set1_epi16((2 * w + 1) << 8 | 2 * w),
                        );
                        sumi = madd_acc(sumi, p, _mm256_shuffle_epi8(half_sc, pick));
                    }
                }
                let sumi = _mm256_sub_epi32(sumi, offset);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum_ps(acc)
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            for (xb, yb) in x.iter().zip(y) {
                let (xd, yd) = halves(xb.d, yb.d);
                let d = xd * yd;
                let s = dot_i8(load(xb.qs.as_ptr().cast()), load(yb.qs.as_ptr().cast()));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
            }
            hsum_ps(acc)
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            for (xb, yb) in x.iter().zip(y) {
                let (xd, yd) = halves(xb.d, yb.d);
                let d = xd * yd;
                let q = _mm256_sub_epi8(nibbles(&xb.qs), _mm256_set1_epi8(8));
                let s = dot_i8(q, load(yb.qs.as_ptr().cast()));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
            }
            hsum_ps(acc)
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_q5_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            for (xb, yb) in x.iter().zip(y) {
                let (xd, yd) = halves(xb.d, yb.d);
                let d = xd * yd;
                // q − 16 is the nibble where the fifth bit is set and nibble | 0xF0 where not.
                let high = _mm256_andnot_si256(bytes_from_bits(xb.qh), _mm256_set1_epi8(-16));
                let q = _mm256_or_si256(nibbles(&xb.qs), high);
                let s = dot_i8(q, load(yb.qs.as_ptr().cast()));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
            }
            hsum_ps(acc)
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_q4_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let mut offsets = 0.0f32;
            for (xb, yb) in x.iter().zip(y) {
                let (xd, yd) = halves(xb.d, yb.d);
                let d = xd * yd;
                let (m, s) = halves(xb.m, yb.s);
                offsets += m * s;
                let s = dot_u8_i8(
                    _mm256_setzero_si256(),
                    nibbles(&xb.qs),
                    load(yb.qs.as_ptr().cast()),
                );
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
            }
            hsum_ps(acc) + offsets
        }

        /// Shared by F32, F16 and BF16: `widen(p)` loads the 8 elements of `size` bytes at
        /// `p` as f32.
        #[inline]
        #[target_feature(enable = $features)]
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

        #[target_feature(enable = $features)]
        unsafe fn dot_f32(x: &[F32], y: &[F32]) -> f32 {
            dot_floats::<4>(x.as_ptr().cast(), y.as_ptr().cast(), x.len(), |p| {
                _mm256_loadu_ps(p.cast())
            })
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_f16(x: &[F16], y: &[F16]) -> f32 {
            dot_floats::<2>(x.as_ptr().cast(), y.as_ptr().cast(), x.len(), |p| {
                _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
            })
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_bf16(x: &[Bf16], y: &[Bf16]) -> f32 {
            dot_floats::<2>(x.as_ptr().cast(), y.as_ptr().cast(), x.len(), |p| {
                let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
            })
        }

        /// `R` weight rows × `T` activation rows of a 32-element format with Q8_0 activations.
        /// `signed(block)` gives a weight block's 32 quants as signed bytes and its f16 scale
        /// (a −128 is read as magnitude 128, exact because Q8_0 activations stop at ±127). Each weight block is unpacked once for `T` activations and each
        /// activation block loaded once for `R` rows; the R·T sums stay in registers.
        #[inline(always)]
        unsafe fn tile_q8_acts<W: Block, const R: usize, const T: usize>(
            rows: [&[W]; R],
            acts: [&[BlockQ8_0]; T],
            signed: impl Fn(&W) -> (__m256i, [u8; 2]),
            out: &mut [f32],
            n_acts: usize,
        ) {
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            for b in 0..rows[0].len() {
                let mut a = [_mm256_setzero_si256(); T];
                let mut ad = [_mm256_setzero_ps(); T];
                for t in 0..T {
                    let block = acts[t].get_unchecked(b);
                    a[t] = load(block.qs.as_ptr().cast());
                    ad[t] = _mm256_set1_ps(halves(block.d, block.d).0);
                }
                for r in 0..R {
                    let (w, wd) = signed(rows[r].get_unchecked(b));
                    let wd = _mm256_set1_ps(halves(wd, wd).0);
                    let w_abs = _mm256_sign_epi8(w, w);
                    for t in 0..T {
                        let s = dot_u8_i8(_mm256_setzero_si256(), w_abs, _mm256_sign_epi8(a[t], w));
                        let scale = _mm256_mul_ps(wd, ad[t]);
                        acc[r][t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(s), acc[r][t]);
                    }
                }
            }
            for r in 0..R {
                for t in 0..T {
                    out[r * n_acts + t] = hsum_ps(acc[r][t]);
                }
            }
        }

        /// Drives `tile_q8_acts` over all rows × activations: tiles of 4 × 4, activations in
        /// groups that stay in L2 while the rows pass over them.
        #[inline(always)]
        unsafe fn tiles_q8_acts<W: Block>(
            rows: &[u8],
            row_bytes: usize,
            acts: &[u8],
            n_acts: usize,
            out: &mut [f32],
            signed: impl Fn(&W) -> (__m256i, [u8; 2]) + Copy,
        ) {
            const ACT_GROUP: usize = 64;
            let n_rows = rows.len() / row_bytes;
            let act_bytes = acts.len() / n_acts;
            let row = |r: usize| as_blocks::<W>(&rows[r * row_bytes..(r + 1) * row_bytes]);
            let act = |t: usize| as_blocks::<BlockQ8_0>(&acts[t * act_bytes..(t + 1) * act_bytes]);
            for group in (0..n_acts).step_by(ACT_GROUP) {
                let group_end = (group + ACT_GROUP).min(n_acts);
                for r0 in (0..n_rows).step_by(4) {
                    let rr = (n_rows - r0).min(4);
                    let mut t0 = group;
                    while t0 < group_end {
                        let tt = (group_end - t0).min(4);
                        macro_rules! go {
                            ($r:literal, $t:literal, $first_row:expr) => {
                                tile_q8_acts::<W, $r, $t>(
                                    std::array::from_fn(|i| row($first_row + i)),
                                    std::array::from_fn(|i| act(t0 + i)),
                                    signed,
                                    &mut out[$first_row * n_acts + t0..],
                                    n_acts,
                                )
                            };
                        }
                        if rr == 4 {
                            match tt {
                                4 => go!(4, 4, r0),
                                3 => go!(4, 3, r0),
                                2 => go!(4, 2, r0),
                                _ => go!(4, 1, r0),
                            }
                        } else {
                            for r in r0..r0 + rr {
                                match tt {
                                    4 => go!(1, 4, r),
                                    3 => go!(1, 3, r),
                                    2 => go!(1, 2, r),
                                    _ => go!(1, 1, r),
                                }
                            }
                        }
                        t0 += tt;
                    }
                }
            }
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_tile_q8_0(
            rows: &[u8],
            row_bytes: usize,
            acts: &[u8],
            n_acts: usize,
            out: &mut [f32],
        ) {
            tiles_q8_acts(rows, row_bytes, acts, n_acts, out, |x: &BlockQ8_0| {
                (load(x.qs.as_ptr().cast()), x.d)
            });
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_tile_q5_0(
            rows: &[u8],
            row_bytes: usize,
            acts: &[u8],
            n_acts: usize,
            out: &mut [f32],
        ) {
            tiles_q8_acts(rows, row_bytes, acts, n_acts, out, |x: &BlockQ5_0| {
                let high = _mm256_andnot_si256(bytes_from_bits(x.qh), _mm256_set1_epi8(-16));
                (_mm256_or_si256(nibbles(&x.qs), high), x.d)
            });
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_tile_q4_0(
            rows: &[u8],
            row_bytes: usize,
            acts: &[u8],
            n_acts: usize,
            out: &mut [f32],
        ) {
            tiles_q8_acts(rows, row_bytes, acts, n_acts, out, |x: &BlockQ4_0| {
                (_mm256_sub_epi8(nibbles(&x.qs), _mm256_set1_epi8(8)), x.d)
            });
        }

        /// One Q4_K row × `T` activation rows: each block's quants and scales are unpacked
        /// once, then multiplied with every activation row as `dot_q4_k` does.
        #[inline(always)]
        unsafe fn tile_q4_k<const T: usize>(x: &[BlockQ4K], y: [&[BlockQ8K]; T]) -> [f32; T] {
            let m4 = _mm256_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); T];
            let mut acc_m = [_mm_setzero_ps(); T];
            for (b, xb) in x.iter().enumerate() {
                let (xd, xdmin) = halves(xb.d, xb.dmin);
                let (sc, mins) = unpack_scales_mins(&xb.scales);
                let mins16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(mins.as_ptr().cast()));
                let sc16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(sc.as_ptr().cast()));
                let sc16 = _mm256_set_m128i(sc16, sc16);
                let mut quants = [_mm256_setzero_si256(); 8];
                let mut scales = [_mm256_setzero_si256(); 8];
                for c in 0..4 {
                    let q4 = load(xb.qs.as_ptr().add(32 * c));
                    quants[2 * c] = _mm256_and_si256(q4, m4);
                    quants[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4);
                    let j = 2 * c as i16;
                    scales[2 * c] =
                        _mm256_shuffle_epi8(sc16, _mm256_set1_epi16((2 * j + 1) << 8 | 2 * j));
                    scales[2 * c + 1] = _mm256_shuffle_epi8(
                        sc16,
                        _mm256_set1_epi16((2 * j + 3) << 8 | (2 * j + 2)),
                    );
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
                        let p = _mm256_maddubs_epi16(
                            quants[k],
                            load(yb.qs.as_ptr().add(32 * k).cast()),
                        );
                        sumi = madd_acc(sumi, p, scales[k]);
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
        unsafe fn tile_q6_k<const T: usize>(x: &[BlockQ6K], y: [&[BlockQ8K]; T]) -> [f32; T] {
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
                            _mm_set1_epi16((2 * w + 3) << 8 | (2 * w + 2)),
                            _mm_set1_epi16((2 * w + 1) << 8 | 2 * w),
                        );
                        scales[4 * h + k] = _mm256_shuffle_epi8(half_sc, pick);
                    }
                }
                for t in 0..T {
                    let yb = y[t].get_unchecked(b);
                    let offset =
                        _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, load(yb.bsums.as_ptr())));
                    let mut sumi = _mm256_setzero_si256();
                    for k in 0..8 {
                        let p = _mm256_maddubs_epi16(
                            quants[k],
                            load(yb.qs.as_ptr().add(32 * k).cast()),
                        );
                        sumi = madd_acc(sumi, p, scales[k]);
                    }
                    let sumi = _mm256_sub_epi32(sumi, offset);
                    let d = _mm256_set1_ps(xd * yb.d());
                    acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[t]);
                }
            }
            std::array::from_fn(|t| hsum_ps(acc[t]))
        }

        /// Drives a one-row tile kernel over all rows × activations, activations in groups
        /// that stay in L2 while the rows pass over them.
        macro_rules! one_row_tiles {
            ($name:ident, $block:ty, $tile:ident) => {
                #[target_feature(enable = $features)]
                unsafe fn $name(
                    rows: &[u8],
                    row_bytes: usize,
                    acts: &[u8],
                    n_acts: usize,
                    out: &mut [f32],
                ) {
                    const ACT_GROUP: usize = 32;
                    let n_rows = rows.len() / row_bytes;
                    let act_bytes = acts.len() / n_acts;
                    let act =
                        |t: usize| as_blocks::<BlockQ8K>(&acts[t * act_bytes..(t + 1) * act_bytes]);
                    for group in (0..n_acts).step_by(ACT_GROUP) {
                        let group_end = (group + ACT_GROUP).min(n_acts);
                        for r in 0..n_rows {
                            let x = as_blocks::<$block>(&rows[r * row_bytes..(r + 1) * row_bytes]);
                            let out = &mut out[r * n_acts..(r + 1) * n_acts];
                            let mut t0 = group;
                            while t0 + 4 <= group_end {
                                let sums = $tile::<4>(x, std::array::from_fn(|i| act(t0 + i)));
                                out[t0..t0 + 4].copy_from_slice(&sums);
                                t0 += 4;
                            }
                            for t in t0..group_end {
                                out[t] = $tile::<1>(x, [act(t)])[0];
                            }
                        }
                    }
                }
            };
        }
        one_row_tiles!(dot_tile_q4_k, BlockQ4K, tile_q4_k);
        one_row_tiles!(dot_tile_q6_k, BlockQ6K, tile_q6_k);

        /// Each group of 64 (then 8) output elements stays in registers while every row is
        /// added to it, so `out` is read and written once.
        #[target_feature(enable = $features)]
        unsafe fn accumulate_f16_rows(weights: &[f32], rows: &[u8], out: &mut [f32]) {
            let dim = out.len();
            let at = |i: usize, d: usize| rows.as_ptr().add(2 * (i * dim + d));
            let mut d = 0;
            while d + 64 <= dim {
                let mut acc = [_mm256_setzero_ps(); 8];
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(out.as_ptr().add(d + 8 * k));
                }
                for (i, &w) in weights.iter().enumerate() {
                    let w = _mm256_set1_ps(w);
                    for (k, a) in acc.iter_mut().enumerate() {
                        let v = _mm256_cvtph_ps(_mm_loadu_si128(at(i, d + 8 * k).cast()));
                        *a = _mm256_fmadd_ps(w, v, *a);
                    }
                }
                for (k, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(out.as_mut_ptr().add(d + 8 * k), *a);
                }
                d += 64;
            }
            while d + 8 <= dim {
                let mut acc = _mm256_loadu_ps(out.as_ptr().add(d));
                for (i, &w) in weights.iter().enumerate() {
                    let v = _mm256_cvtph_ps(_mm_loadu_si128(at(i, d).cast()));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(w), v, acc);
                }
                _mm256_storeu_ps(out.as_mut_ptr().add(d), acc);
                d += 8;
            }
            for (d, o) in out.iter_mut().enumerate().skip(d) {
                for (i, &w) in weights.iter().enumerate() {
                    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([
                        *at(i, d),
                        *at(i, d).add(1),
                    ]) as i32));
                    *o = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(w), v, _mm_set_ss(*o)));
                }
            }
        }

        macro_rules! rows_fn {
            ($name:ident, $dot:ident) => {
                #[target_feature(enable = $features)]
                unsafe fn $name(rows: &[u8], act: &[u8], out: &mut [f32]) {
                    // SAFETY: this function is only reachable through a table built after
                    // checking the CPU has `$features`, which `$dot` needs.
                    for_each_row(rows, act, out, |x, y| unsafe { $dot(x, y) });
                }
            };
        }
        rows_fn!(dot_rows_q4_k, dot_q4_k);
        rows_fn!(dot_rows_q5_k, dot_q5_k);
        rows_fn!(dot_rows_q6_k, dot_q6_k);
        rows_fn!(dot_rows_q8_0, dot_q8_0);
        rows_fn!(dot_rows_q4_0, dot_q4_0);
        rows_fn!(dot_rows_q5_0, dot_q5_0);
        rows_fn!(dot_rows_q4_1, dot_q4_1);
        rows_fn!(dot_rows_f32, dot_f32);
        rows_fn!(dot_rows_f16, dot_f16);
        rows_fn!(dot_rows_bf16, dot_bf16);

        /// Rounds 32 floats times `scale` to even and packs them to bytes in order; also
        /// returns the four i32 vectors before packing.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn round_pack(x: *const f32, scale: f32, dst: *mut i8) -> [__m256i; 4] {
            let mul = _mm256_set1_ps(scale);
            let mut ints = [_mm256_setzero_si256(); 4];
            for (k, v) in ints.iter_mut().enumerate() {
                let scaled = _mm256_mul_ps(_mm256_loadu_ps(x.add(8 * k)), mul);
                let rounded =
                    _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(scaled);
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

        #[inline]
        #[target_feature(enable = $features)]
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
        #[target_feature(enable = $features)]
        unsafe fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
            let blocks = as_blocks_mut::<BlockQ8_0>(dst);
            assert_eq!(src.len(), blocks.len() * 32);
            for (x, y) in src.chunks_exact(32).zip(blocks) {
                let (d, id) = scales(abs_max(x));
                y.d = f32_to_f16(d);
                round_pack(x.as_ptr(), id, y.qs.as_mut_ptr());
            }
        }

        /// Bit-identical to `q8_k::quantize`.
        #[target_feature(enable = $features)]
        unsafe fn quantize_q8_k(src: &[f32], dst: &mut [u8]) {
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
    };
}

pub(crate) use x86_kernels;
