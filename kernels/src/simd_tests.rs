//! Every SIMD variant the host can run, checked against the scalar reference.
//!
//! Tolerances: activation quantizers must agree bit for bit. Dot products share their integer
//! arithmetic with the reference, so they may differ only by float rounding in a different
//! accumulation order: |simd − scalar| ≤ 1e-5 · M, where M sums |partial product| over every
//! float term (the scale part and the min/offset part of each weight counted separately, so
//! that cancellation between them cannot hide an error).

use crate::block::f32_to_f16;
use crate::test_util::{dequantized, f16_fields, random_quant_row, random_weight_row, Rng};
use crate::{GgmlType, Isa, Kernels};

const WEIGHT_TYPES: [GgmlType; 13] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::Q5_K,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q4_1,
    GgmlType::Q5_1,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];

fn scalar() -> Kernels {
    Kernels::for_isa(Isa::Scalar).unwrap()
}

/// The non-scalar kernel tables this host can run (none is a skip, printed).
fn simd_variants() -> Vec<Kernels> {
    let v: Vec<_> = Isa::ALL
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .filter_map(Kernels::for_isa)
        .collect();
    if v.is_empty() {
        eprintln!("no SIMD instruction set available on this host; nothing to compare");
    }
    v
}

/// M from the module comment: for each f16 field of the block format, the weights with only
/// that field kept, dotted in absolute value with the activations.
fn magnitude(ty: GgmlType, row: &[u8], act: &[f32]) -> f64 {
    let abs_dot = |w: &[f32]| -> f64 {
        w.iter()
            .zip(act)
            .map(|(&a, &b)| (a as f64 * b as f64).abs())
            .sum()
    };
    let fields = f16_fields(ty);
    if fields.len() < 2 {
        return abs_dot(&dequantized(ty, row));
    }
    fields
        .iter()
        .map(|&keep| {
            let mut r = row.to_vec();
            for block in r.chunks_exact_mut(ty.block_bytes()) {
                for &other in fields.iter().filter(|&&f| f != keep) {
                    block[other..other + 2].fill(0);
                }
            }
            abs_dot(&dequantized(ty, &r))
        })
        .sum()
}

fn compare_dots(ty: GgmlType, n: usize, rows: &[u8], x: &[f32], what: &str) {
    let reference = scalar();
    let act_ty = ty.vec_dot_type();
    let mut act = vec![0u8; act_ty.row_bytes(n).unwrap()];
    reference.quantize_activation(ty, x, &mut act);
    let a = dequantized(act_ty, &act);
    let count = rows.len() / ty.row_bytes(n).unwrap();
    let mut expected = vec![0.0f32; count];
    reference.dot_rows(ty, n, rows, &act, &mut expected);
    for k in simd_variants() {
        let mut got = vec![f32::NAN; count];
        k.dot_rows(ty, n, rows, &act, &mut got);
        for (r, (&g, &e)) in got.iter().zip(&expected).enumerate() {
            let row = &rows[r * ty.row_bytes(n).unwrap()..][..ty.row_bytes(n).unwrap()];
            let bound = 1e-5 * magnitude(ty, row, &a);
            assert!(
                (g as f64 - e as f64).abs() <= bound,
                "{} {} {what} n={n} row {r}: {g} vs scalar {e} (bound {bound})",
                k.isa(),
                ty.name()
            );
        }
    }
}

#[test]
fn dot_rows_match_scalar_on_random_blocks() {
    let mut rng = Rng::new(100);
    for ty in WEIGHT_TYPES {
        // The float kernels' 8- and 32-element tails; rows of one, three and nine blocks
        // beside even ones, for kernels that take blocks in pairs.
        let lens: &[usize] = match ty.block_len() {
            1 => &[7, 64, 263, 4096],
            32 => &[32, 96, 256, 288, 2048, 4096],
            _ => &[256, 768, 2048, 4096],
        };
        for &n in lens {
            let rows: Vec<u8> = (0..5)
                .flat_map(|_| random_weight_row(ty, n, &mut rng))
                .collect();
            let x = rng.normal_vec(n, 1.0);
            compare_dots(ty, n, &rows, &x, "random");
        }
    }
}

#[test]
fn dot_rows_match_scalar_on_extreme_blocks() {
    const F16_MAX: f32 = 65504.0;
    let min_subnormal = 2.0f32.powi(-24);
    let mut rng = Rng::new(101);
    let n = 512;
    for ty in WEIGHT_TYPES.into_iter().filter(|t| t.block_len() > 1) {
        let blocks = n / ty.block_len();
        let filled = |byte: u8, scale: f32| -> Vec<u8> {
            let mut row = vec![byte; ty.row_bytes(n).unwrap()];
            for block in row.chunks_exact_mut(ty.block_bytes()) {
                for &at in f16_fields(ty) {
                    block[at..at + 2].copy_from_slice(&f32_to_f16(scale));
                }
            }
            row
        };
        let cases = [
            ("zero blocks", vec![0u8; ty.row_bytes(n).unwrap()]),
            ("all bits set, f16 max scales", filled(0xFF, F16_MAX)),
            (
                "all bytes 0x80 (q8 -128), f16 max scales",
                filled(0x80, F16_MAX),
            ),
            (
                "all bytes 0x7F (q8 127), f16 max scales",
                filled(0x7F, F16_MAX),
            ),
            ("all quants zero, negative scales", filled(0x00, -3.0)),
            (
                "random quants, subnormal scales",
                random_quant_row(ty, blocks, &mut rng, |_| min_subnormal),
            ),
            (
                "random quants, f16 max scales",
                random_quant_row(ty, blocks, &mut rng, |r| {
                    if r.uniform() < 0.5 {
                        F16_MAX
                    } else {
                        -F16_MAX
                    }
                }),
            ),
        ];
        let saturating: Vec<f32> = (0..n)
            .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        for (what, row) in &cases {
            compare_dots(ty, n, row, &rng.normal_vec(n, 1.0), what);
            compare_dots(
                ty,
                n,
                row,
                &saturating,
                &format!("{what}, activations ±127"),
            );
            compare_dots(
                ty,
                n,
                row,
                &vec![0.0; n],
                &format!("{what}, zero activations"),
            );
        }
    }
}

#[test]
fn activation_quantizers_match_scalar_bit_for_bit() {
    let mut rng = Rng::new(102);
    let n = 2048;
    let mut inputs = vec![
        rng.normal_vec(n, 1.0),
        rng.normal_vec(n, 1e-30),
        vec![0.0; n],
        (0..n)
            .map(|i| if i % 2 == 0 { 3.0 } else { -3.0 })
            .collect(),
        // ties: with amax 127 in every block each value is its own quant
        (0..n)
            .map(|i| {
                if i % 32 == 0 {
                    127.0
                } else {
                    (i % 7) as f32 - 3.5
                }
            })
            .collect(),
    ];
    let mut mixed = rng.normal_vec(n, 5.0);
    mixed[256..512].fill(0.0);
    mixed[700] = -1e4;
    mixed[701] = 1e4; // same magnitude, opposite sign: the first one sets the scale
    inputs.push(mixed);
    let reference = scalar();
    for k in simd_variants() {
        for weight_ty in WEIGHT_TYPES {
            let act_ty = weight_ty.vec_dot_type();
            for (i, x) in inputs.iter().enumerate() {
                let mut want = vec![0u8; act_ty.row_bytes(n).unwrap()];
                let mut got = vec![0xAAu8; want.len()];
                reference.quantize_activation(weight_ty, x, &mut want);
                k.quantize_activation(weight_ty, x, &mut got);
                assert!(want == got, "{} {} input {i}", k.isa(), act_ty.name());
            }
        }
    }
}

fn f16_vec(rng: &mut Rng, len: usize, scale: f32) -> Vec<half::f16> {
    rng.normal_vec(len, scale)
        .into_iter()
        .map(half::f16::from_f32)
        .collect()
}

/// Attention's weighted sums of f16 value rows for 1 to 9 queries at once (both sides of each
/// ISA's queries per group): only the rounding of the products may differ (fused multiply-add),
/// so |simd − scalar| ≤ 1e-6 · Σ_i |w_i · v_i[d]| per element; and each query's sums are
/// bit for bit those it gets alone, which lets the model group query heads as it likes.
#[test]
fn attention_values_match_scalar() {
    let mut rng = Rng::new(103);
    let reference = scalar();
    for (dim, rows) in [(256, 37), (64, 1), (72, 5), (13, 4), (256, 0), (40, 600)] {
        let values = f16_vec(&mut rng, dim * rows, 3.0);
        for queries in [1, 2, 3, 4, 5, 8, 9] {
            let weights = rng.normal_vec(queries * rows, 1.0);
            let start = rng.normal_vec(queries * dim, 1.0);
            let mut expected = start.clone();
            reference.attention_values(&weights, &values, dim, &mut expected);
            for k in simd_variants() {
                let mut got = start.clone();
                k.attention_values(&weights, &values, dim, &mut got);
                for q in 0..queries {
                    let mut alone = start[q * dim..][..dim].to_vec();
                    k.attention_values(&weights[q * rows..][..rows], &values, dim, &mut alone);
                    assert!(
                        alone
                            .iter()
                            .zip(&got[q * dim..])
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{} dim {dim} rows {rows}: query {q} of {queries} differs from alone",
                        k.isa()
                    );
                    for d in 0..dim {
                        let at = q * dim + d;
                        let magnitude: f64 = start[at].abs() as f64
                            + (0..rows)
                                .map(|i| {
                                    (weights[q * rows + i] * values[i * dim + d].to_f32()).abs()
                                        as f64
                                })
                                .sum::<f64>();
                        let bound = 1e-6 * magnitude;
                        assert!(
                            (got[at] as f64 - expected[at] as f64).abs() <= bound,
                            "{} dim {dim} rows {rows} query {q} element {d}: {} vs scalar {} \
                             (bound {bound})",
                            k.isa(),
                            got[at],
                            expected[at]
                        );
                    }
                }
            }
        }
    }
}

/// Attention scores of 1 to 9 queries against f16 keys, dims on both sides of the kernels'
/// 8- and 32-element steps: within the dot-product tolerance of the scalar reference, and for
/// each query bit for bit what one F16 dot product per key gives, alone or grouped.
#[test]
fn attention_scores_match_scalar_and_single_dots() {
    let mut rng = Rng::new(107);
    let reference = scalar();
    for (dim, n_keys) in [
        (256, 37),
        (64, 1),
        (72, 5),
        (13, 4),
        (256, 0),
        (40, 600),
        (7, 3),
    ] {
        let keys = f16_vec(&mut rng, dim * n_keys, 2.0);
        for queries in [1, 2, 3, 4, 5, 8, 9] {
            let query_halves = f16_vec(&mut rng, queries * dim, 2.0);
            let mut expected = vec![0f32; queries * n_keys];
            reference.attention_scores(&query_halves, &keys, dim, &mut expected);
            for k in simd_variants() {
                let mut got = vec![f32::NAN; queries * n_keys];
                k.attention_scores(&query_halves, &keys, dim, &mut got);
                for q in 0..queries {
                    let query = &query_halves[q * dim..][..dim];
                    let as_bytes = |h: &[half::f16]| -> Vec<u8> {
                        h.iter().flat_map(|x| x.to_le_bytes()).collect()
                    };
                    let mut single = vec![0f32; n_keys];
                    k.dot_rows(
                        GgmlType::F16,
                        dim,
                        &as_bytes(&keys),
                        &as_bytes(query),
                        &mut single,
                    );
                    for i in 0..n_keys {
                        let at = q * n_keys + i;
                        assert_eq!(
                            got[at].to_bits(),
                            single[i].to_bits(),
                            "{} dim {dim} query {q} of {queries} key {i}: {} vs one dot {}",
                            k.isa(),
                            got[at],
                            single[i]
                        );
                        let magnitude: f64 = (0..dim)
                            .map(|d| (query[d].to_f32() * keys[i * dim + d].to_f32()).abs() as f64)
                            .sum();
                        let bound = 1e-5 * magnitude;
                        assert!(
                            (got[at] as f64 - expected[at] as f64).abs() <= bound,
                            "{} dim {dim} query {q} key {i}: {} vs scalar {} (bound {bound})",
                            k.isa(),
                            got[at],
                            expected[at]
                        );
                    }
                }
            }
        }
    }
}

/// The batched kernels (tiled where a variant has them, else `dot_rows` per activation row)
/// against scalar `dot_rows` one activation row at a time, with the bound of `compare_dots`;
/// shapes cover every tile remainder and more activation rows than one cache group. Where a
/// variant has grouped kernels for the type, the rows grouped go through them too, batched
/// and one activation at a time.
#[test]
fn dot_rows_batch_matches_scalar_dot_rows() {
    let mut rng = Rng::new(104);
    let reference = scalar();
    let mut variants = simd_variants();
    variants.push(scalar());
    for ty in WEIGHT_TYPES {
        let short = if ty.block_len() == 1 { 96 } else { 512 };
        // Sixteen-row tiles (AVX-512's 512-bit ones) need shapes of 16 rows and more; rows of
        // 10240 make activation groups sized by bytes (512 KiB) end before the last activation.
        // Fewer activations than a tile over many rows (48 x 1, 48 x 5, 33 x 7): generation
        // batches, which skip the packing. The grouped layouts take the shapes of whole groups
        // of eight rows; at 24 and 40 rows the sixteen-row tiles leave one group over; 2, 3, 6
        // and 7 activations put every count of one to four through the grouped tail.
        let shapes = [
            (1, 1, short),
            (48, 1, short),
            (48, 5, short),
            (33, 7, short),
            (4, 4, short),
            (5, 3, short),
            (9, 7, short),
            (8, 70, short),
            (3, 2, short),
            (35, 11, short),
            (16, 40, short),
            (40, 17, short),
            (17, 53, 10240),
            (16, 2, short),
            (8, 3, short),
            (32, 6, short),
            (24, 7, short),
            (24, 9, short),
        ];
        for (shape, (n_rows, n_acts, n)) in shapes.into_iter().enumerate() {
            // The last shape has every row's quant bytes at one extreme (all bits set, 0x80,
            // 0x7F) and activations of ±127, every one of them +127 in the even ones: the
            // largest integer products and sums a kernel meets.
            let extreme = shape == shapes.len() - 1 && ty.block_len() > 1;
            let rows: Vec<u8> = (0..n_rows)
                .flat_map(|r| {
                    let mut row = random_weight_row(ty, n, &mut rng);
                    if extreme {
                        let byte = [0xFF, 0x80, 0x7F][r % 3];
                        for block in row.chunks_exact_mut(ty.block_bytes()) {
                            let scales = f16_fields(ty);
                            for (i, b) in block.iter_mut().enumerate() {
                                if !scales.iter().any(|&at| (at..at + 2).contains(&i)) {
                                    *b = byte;
                                }
                            }
                        }
                    }
                    row
                })
                .collect();
            let act_ty = ty.vec_dot_type();
            let act_bytes = act_ty.row_bytes(n).unwrap();
            let mut acts = vec![0u8; n_acts * act_bytes];
            let mut xs = Vec::new();
            for (t, act) in acts.chunks_exact_mut(act_bytes).enumerate() {
                let x = if extreme {
                    (0..n)
                        .map(|i| {
                            if t % 2 == 1 && (i + t) % 3 == 0 {
                                -1.0
                            } else {
                                1.0
                            }
                        })
                        .collect()
                } else {
                    rng.normal_vec(n, 1.0)
                };
                reference.quantize_activation(ty, &x, act);
                xs.push(dequantized(act_ty, act));
            }
            let row_bytes = ty.row_bytes(n).unwrap();
            let expected: Vec<Vec<f32>> = acts
                .chunks_exact(act_bytes)
                .map(|act| {
                    let mut expected = vec![0f32; n_rows];
                    reference.dot_rows(ty, n, &rows, act, &mut expected);
                    expected
                })
                .collect();
            let check = |got: &[f32], k: &Kernels, what: &str| {
                for (t, expected) in expected.iter().enumerate() {
                    for r in 0..n_rows {
                        let row = &rows[r * row_bytes..][..row_bytes];
                        let bound = 1e-5 * magnitude(ty, row, &xs[t]);
                        let g = got[t * n_rows + r];
                        assert!(
                            (g as f64 - expected[r] as f64).abs() <= bound,
                            "{} {} {what} {n_rows}x{n_acts} row {r} act {t}: {g} vs scalar {} (bound {bound})",
                            k.isa(),
                            ty.name(),
                            expected[r]
                        );
                    }
                }
            };
            for k in &variants {
                let mut got = vec![f32::NAN; n_rows * n_acts];
                k.dot_rows_batch(ty, n, &rows, &acts, &mut got);
                check(&got, k, "rows");
                let mut grouped = rows.clone();
                if !k.group_rows(ty, n, &mut grouped) {
                    continue;
                }
                got.fill(f32::NAN);
                k.dot_groups_batch(ty, n, &grouped, &acts, &mut got);
                check(&got, k, "grouped");
                let batched = got.clone();
                for (act, got) in acts
                    .chunks_exact(act_bytes)
                    .zip(got.chunks_exact_mut(n_rows))
                {
                    got.fill(f32::NAN);
                    k.dot_groups(ty, n, &grouped, act, got);
                }
                check(&got, k, "grouped, one activation at a time");
                let shape = format!("{} {} grouped {n_rows}x{n_acts}", k.isa(), ty.name());
                // Below every tile's activation count, a few sequences generating together
                // get bit for bit what each would alone.
                if n_acts < 4 {
                    assert_same_bits(&batched, &got, &format!("{shape} batched"));
                }
                let mut together = vec![f32::NAN; n_rows * n_acts];
                let prepared = k.prepare_groups(ty, n, &acts);
                k.dot_prepared_groups(ty, n, &grouped, &prepared, &mut together);
                assert_same_bits(&together, &got, &format!("{shape} prepared together"));
                let mut row_back = vec![f32::NAN; n];
                for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
                    k.dequantize_grouped_row(ty, &grouped, r, &mut row_back);
                    assert!(
                        row_back
                            .iter()
                            .map(|x| x.to_bits())
                            .eq(dequantized(ty, row).iter().map(|x| x.to_bits())),
                        "{} {} row {r} of {n_rows} taken back out of its group",
                        k.isa(),
                        ty.name()
                    );
                }
            }
        }
    }
}

#[test]
fn activation_quantizers_skip_nan_like_scalar() {
    // Found by tests/hostile.rs: NaN weight scales give NaN activations, whose vector maximum
    // matched no element in the Q8_K quantizer and panicked. Every value the scalar quantizer
    // gives for the numbers around the NaNs must come out the same.
    let mut rng = Rng::new(103);
    let n = 1024;
    let mut x = rng.normal_vec(n, 1.0);
    x[0] = f32::NAN;
    x[300] = f32::NAN;
    x[511] = -f32::NAN;
    x[768..1024].fill(f32::NAN);
    let reference = scalar();
    for k in simd_variants() {
        for weight_ty in WEIGHT_TYPES {
            let act_ty = weight_ty.vec_dot_type();
            let mut want = vec![0u8; act_ty.row_bytes(n).unwrap()];
            let mut got = vec![0u8; want.len()];
            reference.quantize_activation(weight_ty, &x, &mut want);
            k.quantize_activation(weight_ty, &x, &mut got);
            let (want, got) = (dequantized(act_ty, &want), dequantized(act_ty, &got));
            for i in (0..n).filter(|&i| !x[i].is_nan()) {
                assert_eq!(
                    want[i].to_bits(),
                    got[i].to_bits(),
                    "{} {} element {i}",
                    k.isa(),
                    act_ty.name()
                );
            }
        }
    }
}

/// A batch of no weight rows or no activations is no work for any variant (issue #13's class:
/// a task split whose count is zero).
#[test]
fn dot_rows_batch_of_nothing_is_nothing() {
    let mut variants = simd_variants();
    variants.push(scalar());
    for k in &variants {
        for ty in WEIGHT_TYPES {
            let n = if ty.block_len() == 1 { 32 } else { 256 };
            let row = vec![0u8; ty.row_bytes(n).unwrap()];
            let act = vec![0u8; ty.vec_dot_type().row_bytes(n).unwrap()];
            k.dot_rows_batch(ty, n, &[], &act, &mut []);
            k.dot_rows_batch(ty, n, &row, &[], &mut []);
        }
    }
}

/// Softmax's exponentials and their sum, bit for bit the scalar reference's: lengths on both
/// sides of the sixteen-element groups, scores from far below the maximum (underflow to
/// subnormals and to 0) to the maximum itself, and −∞ for masked scores.
#[test]
fn softmax_exponentials_match_scalar_bit_for_bit() {
    let mut rng = Rng::new(109);
    let reference = scalar();
    for len in [0, 1, 7, 15, 16, 17, 31, 32, 33, 48, 100, 1000] {
        let mut x = rng.normal_vec(len, 30.0);
        if len > 3 {
            x[1] = f32::NEG_INFINITY;
            x[2] = -100.0;
        }
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut expected = x.clone();
        let expected_sum = reference.softmax_exponentials(&mut expected, max);
        for k in simd_variants() {
            let mut got = x.clone();
            let sum = k.softmax_exponentials(&mut got, max);
            assert_eq!(
                sum.to_bits(),
                expected_sum.to_bits(),
                "{} length {len}: sum",
                k.isa()
            );
            assert_same_bits(&got, &expected, &format!("{} length {len}", k.isa()));
        }
    }
}

/// Each element of `got` bit for bit `expected`'s.
fn assert_same_bits(got: &[f32], expected: &[f32], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(g.to_bits(), e.to_bits(), "{what} element {i}: {g} vs {e}");
    }
}

/// Gemma's soft cap, bit for bit the scalar reference's: lengths on both sides of the
/// eight-element steps, values across the switch from tanh's polynomial to its exponential,
/// far beyond the cap, ±0 and ±∞.
#[test]
fn soft_cap_matches_scalar_bit_for_bit() {
    let mut rng = Rng::new(110);
    let reference = scalar();
    for len in [0, 1, 7, 8, 9, 15, 16, 17, 100, 1003] {
        let mut x = rng.normal_vec(len, 40.0);
        // The switch lies at |x| = 0.625 · 30 = 18.75.
        let specials = [
            0.0,
            -0.0,
            18.749,
            18.751,
            -18.75,
            1e6,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        for (v, special) in x.iter_mut().step_by(3).zip(specials) {
            *v = special;
        }
        let mut expected = x.clone();
        reference.soft_cap(&mut expected, 30.0);
        for k in simd_variants() {
            let mut got = x.clone();
            k.soft_cap(&mut got, 30.0);
            assert_same_bits(&got, &expected, &format!("{} length {len}", k.isa()));
        }
    }
}
