//! Choosing kernels once for the host CPU, and the entry points the engine calls.

use crate::block::GROUP_ROWS;
use crate::types::GgmlType::{self, *};
use crate::{
    bf16, exp, f16, f32, q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0, q8_1, q8_k,
    tanh,
};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// An instruction set a kernel table can be built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, the reference every other variant is tested against.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512 F, BW, VL and VNNI (plus AVX2, FMA, F16C). A CPU with AVX-512 but
    /// without VNNI gets [`Isa::Avx2`] from [`Kernels::detect`].
    Avx512,
    /// [`Isa::Avx512`] with generation's row kernels in 512-bit registers, for cores that run
    /// them at full width; [`Kernels::detect`] takes them type by type by the CPU's make.
    Avx512Wide,
    /// AArch64 Advanced SIMD.
    Neon,
}

impl Isa {
    /// Every ISA, best last.
    pub const ALL: [Isa; 5] = [
        Isa::Scalar,
        Isa::Neon,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Wide,
    ];

    /// The name accepted by `LLMFILE_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Wide => "avx512-wide",
            Isa::Neon => "neon",
        }
    }

    /// Whether the host CPU can run this ISA's kernels.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Wide => crate::x86::has_avx512(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => crate::arm::has_neon(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = IsaError;

    fn from_str(s: &str) -> Result<Isa, IsaError> {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| IsaError::Unknown(s.to_string()))
    }
}

/// Why an ISA requested by name cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IsaError {
    /// The name is none of `scalar`, `avx2`, `avx512`, `avx512-wide`, `neon`.
    Unknown(String),
    /// The host CPU lacks the instructions.
    Unavailable(Isa),
}

impl fmt::Display for IsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsaError::Unknown(name) => write!(
                f,
                "unknown instruction set {name:?} in {ISA_ENV}: use scalar, avx2, avx512, avx512-wide or neon"
            ),
            IsaError::Unavailable(isa) => {
                let usable: Vec<_> = Isa::ALL
                    .into_iter()
                    .filter(|i| i.is_available())
                    .map(Isa::name)
                    .collect();
                write!(
                    f,
                    "this CPU cannot run {isa} kernels ({ISA_ENV}); it can run: {}",
                    usable.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for IsaError {}

/// The environment variable that overrides CPU detection.
pub const ISA_ENV: &str = "LLMFILE_ISA";

/// Dot products of whole weight rows with one quantized activation row. `rows` holds
/// `out.len()` rows of equal length, `act` the activation row in the weight type's
/// `vec_dot_type`; the caller has checked the lengths.
pub(crate) type DotRowsFn = unsafe fn(rows: &[u8], act: &[u8], out: &mut [f32]);
/// An activation row rewritten for one type's `DotRowsFn` (see [`Kernels::prepare_rows`]);
/// length checked by the caller.
pub(crate) type PrepareFn = unsafe fn(act: &[u8]) -> Vec<u8>;
/// Dot products of several weight rows with several activation rows: `out[t * n_rows + r]` =
/// row `r` · activation `t`, where `rows` holds `n_rows = out.len() / n_acts` rows of
/// `row_bytes` and `acts` holds `n_acts` rows; the caller has checked the lengths.
pub(crate) type DotTileFn =
    unsafe fn(rows: &[u8], row_bytes: usize, acts: &[u8], n_acts: usize, out: &mut [f32]);
/// Conversion of a row to f32; lengths checked by the caller.
pub(crate) type DequantizeFn = unsafe fn(src: &[u8], dst: &mut [f32]);
/// Conversion of an f32 row to an activation format; lengths checked by the caller.
pub(crate) type QuantizeFn = unsafe fn(src: &[f32], dst: &mut [u8]);
/// For each of `queries` queries q: `out[q][d] += Σ_i weights[q][i] · rows[i][d]` over f16
/// rows of `out.len() / queries` elements; lengths checked, and none zero, by the caller.
pub(crate) type AccumulateFn =
    unsafe fn(weights: &[f32], rows: &[u8], out: &mut [f32], queries: usize);
/// Softmax's exponentials in place and their sum (see `exp`).
pub(crate) type SoftmaxFn = unsafe fn(x: &mut [f32], max: f32) -> f64;
/// Gemma's soft cap in place (see `tanh`).
pub(crate) type SoftCapFn = unsafe fn(x: &mut [f32], cap: f32);
/// `scores[q][i]` = the dot product of f16 query q with f16 key row i, both `dim` long;
/// lengths checked by the caller.
pub(crate) type ScoresFn = unsafe fn(queries: &[u8], keys: &[u8], dim: usize, scores: &mut [f32]);

const SLOTS: usize = 43;

/// How a matrix's rows lie: one after another as the GGUF stores them, or grouped (see
/// [`Kernels::group_rows`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Rows,
    Groups,
}

/// Activation rows as one kernel table's `dot_prepared_rows` or `dot_prepared_groups` reads
/// them for one weight type, layout and length (made by [`Kernels::prepare_rows`] or
/// [`Kernels::prepare_groups`]).
pub struct PreparedActivation<'a> {
    bytes: Cow<'a, [u8]>,
    weight_ty: GgmlType,
    n: usize,
    /// How many activation rows.
    count: usize,
    isa: Isa,
    /// Which form `bytes` is in: the address of the function that made it, if any. The rows'
    /// and the groups' kernels of a type may read the same form.
    prepared: Option<usize>,
}

/// The number of queries and keys, each `dim` halves long.
fn attention_shape(queries: &[half::f16], keys: &[half::f16], dim: usize) -> (usize, usize) {
    assert!(
        dim > 0 && queries.len().is_multiple_of(dim),
        "queries length"
    );
    assert_eq!(keys.len() % dim, 0, "key rows length");
    (queries.len() / dim, keys.len() / dim)
}

/// Kernels per type, indexed by ggml type id. A function in here may need CPU features: only
/// `Kernels::for_isa` builds tables, after checking the host has them.
#[derive(Clone, Copy)]
pub(crate) struct Table {
    pub(crate) dot_rows: [Option<DotRowsFn>; SLOTS],
    /// For a type whose `dot_rows` reads the activation in a layout of its own, the function
    /// that makes it from the `vec_dot_type` row; `dot_rows` then gets that instead.
    pub(crate) prepare_rows: [Option<PrepareFn>; SLOTS],
    /// Kernels that read each weight block once for several activation rows; types without
    /// one fall back to `dot_rows` per activation row.
    pub(crate) dot_tile: [Option<DotTileFn>; SLOTS],
    /// For a type with a grouped layout (see [`Kernels::group_rows`]): `dot_rows` over
    /// grouped rows, for one activation row or a few at once (their `acts` as
    /// `prepare_groups` made them), and `dot_tile` over grouped rows. Only tables whose kernels
    /// gain from the layout have them; the scalar reference for it is the type's module's own.
    pub(crate) dot_groups: [Option<DotTileFn>; SLOTS],
    /// As `prepare_rows`, for `dot_groups`.
    pub(crate) prepare_groups: [Option<PrepareFn>; SLOTS],
    pub(crate) dot_groups_tile: [Option<DotTileFn>; SLOTS],
    pub(crate) dequantize: [Option<DequantizeFn>; SLOTS],
    pub(crate) quantize: [Option<QuantizeFn>; SLOTS],
    pub(crate) accumulate_f16_rows: AccumulateFn,
    /// Attention scores of several queries at once; without one, `dot_rows` of F16 per query.
    pub(crate) attention_scores_f16: Option<ScoresFn>,
    pub(crate) softmax_exponentials: SoftmaxFn,
    pub(crate) soft_cap: SoftCapFn,
}

impl Table {
    fn scalar() -> Table {
        let mut t = Table {
            dot_rows: [None; SLOTS],
            prepare_rows: [None; SLOTS],
            dot_tile: [None; SLOTS],
            dot_groups: [None; SLOTS],
            prepare_groups: [None; SLOTS],
            dot_groups_tile: [None; SLOTS],
            dequantize: [None; SLOTS],
            quantize: [None; SLOTS],
            accumulate_f16_rows: f16::accumulate_rows,
            attention_scores_f16: None,
            softmax_exponentials: exp::softmax_exponentials,
            soft_cap: tanh::soft_cap,
        };
        let weights: [(GgmlType, DotRowsFn, DequantizeFn); 13] = [
            (F32, f32::dot_rows, f32::dequantize),
            (F16, f16::dot_rows, f16::dequantize),
            (BF16, bf16::dot_rows, bf16::dequantize),
            (Q4_0, q4_0::dot_rows, q4_0::dequantize),
            (Q4_1, q4_1::dot_rows, q4_1::dequantize),
            (Q5_0, q5_0::dot_rows, q5_0::dequantize),
            (Q5_1, q5_1::dot_rows, q5_1::dequantize),
            (Q8_0, q8_0::dot_rows, q8_0::dequantize),
            (Q2_K, q2_k::dot_rows, q2_k::dequantize),
            (Q3_K, q3_k::dot_rows, q3_k::dequantize),
            (Q4_K, q4_k::dot_rows, q4_k::dequantize),
            (Q5_K, q5_k::dot_rows, q5_k::dequantize),
            (Q6_K, q6_k::dot_rows, q6_k::dequantize),
        ];
        for (ty, dot, deq) in weights {
            t.dot_rows[ty as usize] = Some(dot);
            t.dequantize[ty as usize] = Some(deq);
        }
        t.dequantize[Q8_1 as usize] = Some(q8_1::dequantize);
        t.dequantize[Q8_K as usize] = Some(q8_k::dequantize);
        let activations: [(GgmlType, QuantizeFn); 6] = [
            (F32, f32::quantize),
            (F16, f16::quantize),
            (BF16, bf16::quantize),
            (Q8_0, q8_0::quantize),
            (Q8_1, q8_1::quantize),
            (Q8_K, q8_k::quantize),
        ];
        for (ty, q) in activations {
            t.quantize[ty as usize] = Some(q);
        }
        t
    }
}

/// The kernels for one instruction set, chosen once and then shared by every matmul.
#[derive(Clone, Copy)]
pub struct Kernels {
    isa: Isa,
    table: Table,
    /// Types whose row kernels `detect` took from [`Isa::Avx512Wide`] (bit = type id).
    wide_rows: u64,
}

/// The ISA's name, and the types whose generation kernels are 512-bit: `avx512 (512-bit
/// rows: q4_K)`.
impl fmt::Display for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.isa.name())?;
        let wide = self.wide_rows();
        if !wide.is_empty() {
            let names: Vec<_> = wide.iter().map(|t| t.name()).collect();
            write!(f, " (512-bit rows: {})", names.join(", "))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernels").field("isa", &self.isa).finish()
    }
}

impl Kernels {
    /// The best kernels for this CPU. Where AVX-512 runs, each type's generation kernel is the
    /// 256-bit or the 512-bit one as `x86::wide_row_types` says for this CPU's make: chosen by
    /// the CPU, not timed at start, so that every start rounds alike and a seed gives the same
    /// text every time.
    pub fn detect() -> Kernels {
        let best = Isa::ALL
            .into_iter()
            .rev()
            .filter(|&isa| isa != Isa::Avx512Wide)
            .find_map(Kernels::for_isa)
            .expect("scalar kernels run everywhere");
        #[cfg(target_arch = "x86_64")]
        if let Some(wide) = Kernels::for_isa(Isa::Avx512Wide) {
            if best.isa == Isa::Avx512 {
                return best.with_wide_rows(&wide, crate::x86::wide_row_types());
            }
        }
        best
    }

    /// This table with `wide`'s row kernels for `types`.
    #[cfg(target_arch = "x86_64")]
    fn with_wide_rows(mut self, wide: &Kernels, types: &[GgmlType]) -> Kernels {
        for &ty in types {
            self.table.dot_rows[ty as usize] = wide.table.dot_rows[ty as usize];
            self.table.prepare_rows[ty as usize] = wide.table.prepare_rows[ty as usize];
            self.wide_rows |= 1 << ty as u32;
        }
        self
    }

    /// The kernels for `isa`, or `None` when the host CPU cannot run them. Types without a
    /// variant for `isa` use the scalar kernels.
    pub fn for_isa(isa: Isa) -> Option<Kernels> {
        if !isa.is_available() {
            return None;
        }
        #[allow(unused_mut)]
        let mut table = Table::scalar();
        match isa {
            Isa::Scalar => {}
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::x86::avx2::install(&mut table),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Wide => {
                crate::x86::avx512::install(&mut table);
                crate::x86::avx512::install_wide(&mut table);
                if isa == Isa::Avx512Wide {
                    crate::x86::wide_rows::install(&mut table);
                }
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => crate::arm::neon::install(&mut table),
            #[allow(unreachable_patterns)]
            _ => unreachable!("is_available is false for other architectures' ISAs"),
        }
        Some(Kernels {
            isa,
            table,
            wide_rows: 0,
        })
    }

    /// [`Kernels::detect`], unless `LLMFILE_ISA` names an ISA (`scalar`, `avx2`, `avx512`,
    /// `avx512-wide`, `neon`); an unknown name or one the CPU cannot run is an error.
    pub fn from_env() -> Result<Kernels, IsaError> {
        match std::env::var(ISA_ENV) {
            Ok(name) if !name.trim().is_empty() => {
                let isa: Isa = name.parse()?;
                Kernels::for_isa(isa).ok_or(IsaError::Unavailable(isa))
            }
            _ => Ok(Kernels::detect()),
        }
    }

    /// The instruction set these kernels were built for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The types whose generation kernel `detect` took at 512 bits.
    pub fn wide_rows(&self) -> Vec<GgmlType> {
        (0..u64::BITS)
            .filter(|&id| self.wide_rows & (1 << id) != 0)
            .filter_map(GgmlType::from_id)
            .collect()
    }

    /// Converts the activation row `src` to `weight_ty.vec_dot_type()`, ready for
    /// [`Kernels::dot_rows`] with weights of `weight_ty`.
    ///
    /// # Panics
    /// If `weight_ty` is not a supported weight type, `src.len()` is not a multiple of the
    /// activation type's block length, or `dst.len()` is not
    /// `weight_ty.vec_dot_type().row_bytes(src.len())`.
    pub fn quantize_activation(&self, weight_ty: GgmlType, src: &[f32], dst: &mut [u8]) {
        assert!(
            weight_ty.is_supported_weight(),
            "no kernels for {}",
            weight_ty.name()
        );
        let act_ty = weight_ty.vec_dot_type();
        let quantize =
            self.table.quantize[act_ty as usize].expect("every dot type has a quantizer");
        assert_eq!(
            Some(dst.len()),
            act_ty.row_bytes(src.len()),
            "{} activations of {} elements",
            act_ty.name(),
            src.len()
        );
        // SAFETY: the table holds only functions the host CPU can run (checked by `for_isa`),
        // and the lengths were checked above.
        unsafe { quantize(src, dst) }
    }

    /// `out[r]` = dot product of weight row `r` with the activation row `act`.
    ///
    /// `rows` holds `out.len()` contiguous rows of `n` elements of `weight_ty`
    /// (`weight_ty.row_bytes(n)` bytes each); `act` is one row quantized by
    /// [`Kernels::quantize_activation`] for the same `weight_ty`.
    ///
    /// # Panics
    /// If `weight_ty` is unsupported, `n` is not a multiple of its block length, or a slice
    /// length disagrees with `n` and `out.len()`.
    pub fn dot_rows(
        &self,
        weight_ty: GgmlType,
        n: usize,
        rows: &[u8],
        act: &[u8],
        out: &mut [f32],
    ) {
        let act = self.prepare_rows(weight_ty, n, act);
        self.dot_prepared_rows(weight_ty, n, rows, &act, out);
    }

    /// The activation row `act` (`n` elements in the weight type's `vec_dot_type`) in the
    /// form this table's `dot_prepared_rows` reads for `weight_ty`: the same bytes, or a
    /// layout the kernel reads faster, made once for every row it meets (generation calls
    /// the kernel once per task of rows, so a layout made per call would be made hundreds of
    /// times per matrix).
    pub fn prepare_rows<'a>(
        &self,
        weight_ty: GgmlType,
        n: usize,
        act: &'a [u8],
    ) -> PreparedActivation<'a> {
        self.prepare(weight_ty, n, act, Layout::Rows)
    }

    /// As [`Kernels::prepare_rows`], for [`Kernels::dot_prepared_groups`], of one activation
    /// row or several (`acts` a whole number of rows): a few sequences generating together
    /// meet each group of weight rows at once.
    pub fn prepare_groups<'a>(
        &self,
        weight_ty: GgmlType,
        n: usize,
        acts: &'a [u8],
    ) -> PreparedActivation<'a> {
        self.prepare(weight_ty, n, acts, Layout::Groups)
    }

    fn preparer(&self, weight_ty: GgmlType, weights: Layout) -> Option<PrepareFn> {
        match weights {
            Layout::Rows => self.table.prepare_rows[weight_ty as usize],
            Layout::Groups => self.table.prepare_groups[weight_ty as usize],
        }
    }

    fn prepare<'a>(
        &self,
        weight_ty: GgmlType,
        n: usize,
        acts: &'a [u8],
        weights: Layout,
    ) -> PreparedActivation<'a> {
        let row_bytes = weight_ty
            .vec_dot_type()
            .row_bytes(n)
            .unwrap_or_else(|| panic!("{} rows of {n} elements", weight_ty.name()));
        // Rows of no elements are taken as one row: their count cannot be told from no bytes.
        let count = match weights {
            Layout::Groups if row_bytes > 0 => acts.len() / row_bytes,
            _ => 1,
        };
        assert_eq!(acts.len(), count * row_bytes, "activation row length");
        let prepare = self.preparer(weight_ty, weights);
        let bytes = match prepare {
            // SAFETY: as in `quantize_activation`; the preparers take whole rows, block by block.
            Some(prepare) => Cow::Owned(unsafe { prepare(acts) }),
            None => Cow::Borrowed(acts),
        };
        PreparedActivation {
            bytes,
            weight_ty,
            n,
            count,
            isa: self.isa,
            prepared: prepare.map(|f| f as usize),
        }
    }

    /// Refuses an activation that `prepare` did not make in the form this table reads for
    /// the type, layout and length.
    fn check_prepared(
        &self,
        act: &PreparedActivation,
        weight_ty: GgmlType,
        n: usize,
        weights: Layout,
    ) {
        assert!(
            act.weight_ty == weight_ty
                && act.n == n
                && act.isa == self.isa
                && act.prepared == self.preparer(weight_ty, weights).map(|f| f as usize),
            "activation prepared for another type, length, layout or kernel table"
        );
    }

    /// `dot_rows` with an activation made by `prepare_rows` of this same table.
    pub fn dot_prepared_rows(
        &self,
        weight_ty: GgmlType,
        n: usize,
        rows: &[u8],
        act: &PreparedActivation,
        out: &mut [f32],
    ) {
        let dot = self.table.dot_rows[weight_ty as usize]
            .unwrap_or_else(|| panic!("no kernels for {}", weight_ty.name()));
        self.check_prepared(act, weight_ty, n, Layout::Rows);
        rows_checked(weight_ty, n, rows, out.len());
        // SAFETY: as in `quantize_activation`; `act` was made for this kernel and length.
        unsafe { dot(rows, &act.bytes, out) }
    }

    /// `out[t * n_rows + r]` = dot product of weight row `r` with activation row `t`, for every
    /// one of the `n_rows` rows of `rows` and the `n_acts` activation rows in `acts` (each
    /// quantized by [`Kernels::quantize_activation`]): token-major, as the next layer reads it.
    /// The same numbers as [`Kernels::dot_rows`] per activation row, up to float rounding, but
    /// each weight block is read once for several activation rows: the kernel of prompt
    /// processing.
    ///
    /// # Panics
    /// As [`Kernels::dot_rows`], with `acts.len()` a multiple of the activation row length and
    /// `out.len()` the number of weight rows times `n_acts`.
    pub fn dot_rows_batch(
        &self,
        weight_ty: GgmlType,
        n: usize,
        rows: &[u8],
        acts: &[u8],
        out: &mut [f32],
    ) {
        self.batch(weight_ty, n, rows, acts, out, Layout::Rows)
    }

    /// Whether this table has kernels for `weight_ty` in groups of rows, and how many rows a
    /// group holds: the row count a matrix needs for [`Kernels::group_rows`].
    pub fn group_len(&self, weight_ty: GgmlType) -> Option<usize> {
        let grouped = self.table.dot_groups[weight_ty as usize].is_some()
            && self.table.dot_groups_tile[weight_ty as usize].is_some();
        match weight_ty {
            Q4_K | Q5_K | Q6_K | Q8_0 | Q5_0 | Q4_0 | Q4_1 | Q5_1 if grouped => Some(GROUP_ROWS),
            _ => None,
        }
    }

    /// Rewrites `rows` (whole rows of `n` elements of `weight_ty`) in place in the grouped
    /// layout this table's [`Kernels::dot_groups`] and [`Kernels::dot_groups_batch`] read:
    /// [`Kernels::group_len`] rows at a time interleaved block by block, one row per SIMD lane,
    /// the same size as before. Returns false, leaving the rows as they were, where this table
    /// has no grouped kernels for the type or the rows are not whole groups.
    ///
    /// # Panics
    /// If `n` is not a whole number of blocks or `rows` not a whole number of rows.
    pub fn group_rows(&self, weight_ty: GgmlType, n: usize, rows: &mut [u8]) -> bool {
        let row_bytes = weight_ty
            .row_bytes(n)
            .unwrap_or_else(|| panic!("{} rows of {n} elements", weight_ty.name()));
        let Some(group_len) = self.group_len(weight_ty) else {
            return false;
        };
        if row_bytes == 0 {
            return false;
        }
        assert_eq!(rows.len() % row_bytes, 0, "weight rows length");
        if !(rows.len() / row_bytes).is_multiple_of(group_len) {
            return false;
        }
        let group = match weight_ty {
            Q4_K => q4_k::group,
            Q5_K => q5_k::group,
            Q6_K => q6_k::group,
            Q8_0 => q8_0::group,
            Q5_0 => q5_0::group,
            Q4_0 => q4_0::group,
            Q4_1 => q4_1::group,
            Q5_1 => q5_1::group,
            _ => unreachable!("group_len names the grouped types"),
        };
        let mut plain = vec![0u8; group_len * row_bytes];
        for stripe in rows.chunks_exact_mut(group_len * row_bytes) {
            plain.copy_from_slice(stripe);
            group(&plain, row_bytes, stripe);
        }
        true
    }

    /// Row `r` of rows grouped by [`Kernels::group_rows`], dequantized (an embedding lookup in
    /// a matrix that is also the output projection).
    ///
    /// # Panics
    /// If `weight_ty` has no grouped layout here, `dst.len()` is not a whole number of its
    /// blocks, or row `r`'s group lies beyond `groups`.
    pub fn dequantize_grouped_row(
        &self,
        weight_ty: GgmlType,
        groups: &[u8],
        r: usize,
        dst: &mut [f32],
    ) {
        let group_len = self
            .group_len(weight_ty)
            .unwrap_or_else(|| panic!("no grouped kernels for {}", weight_ty.name()));
        let row_bytes = weight_ty
            .row_bytes(dst.len())
            .unwrap_or_else(|| panic!("{} rows of {} elements", weight_ty.name(), dst.len()));
        let stripe_bytes = group_len * row_bytes;
        let stripe = &groups[r / group_len * stripe_bytes..][..stripe_bytes];
        let row = match weight_ty {
            Q4_K => q4_k::ungroup_row(crate::block::as_blocks(stripe), r % group_len),
            Q5_K => q5_k::ungroup_row(crate::block::as_blocks(stripe), r % group_len),
            Q6_K => q6_k::ungroup_row(crate::block::as_blocks(stripe), r % group_len),
            Q8_0 => q8_0::ungroup_row(crate::block::as_blocks(stripe), r % group_len),
            Q5_0 => q5_0::ungroup_row(crate::block::as_blocks(stripe), r % group_len),
            Q4_0 => q4_0::ungroup_row(crate::block::as_blocks(stripe), r % group_len),
            Q4_1 => q4_1::ungroup_row(crate::block::as_blocks(stripe), r % group_len),
            Q5_1 => q5_1::ungroup_row(crate::block::as_blocks(stripe), r % group_len),
            _ => unreachable!("group_len names the grouped types"),
        };
        self.dequantize_row(weight_ty, &row, dst);
    }

    /// [`Kernels::dot_rows`] over rows grouped by [`Kernels::group_rows`] (`out.len()` a whole
    /// number of groups), with `act` as [`Kernels::quantize_activation`] made it.
    ///
    /// # Panics
    /// As [`Kernels::dot_rows`], and if this table has no grouped kernels for `weight_ty` or
    /// `out.len()` is not a whole number of groups.
    pub fn dot_groups(
        &self,
        weight_ty: GgmlType,
        n: usize,
        groups: &[u8],
        act: &[u8],
        out: &mut [f32],
    ) {
        let act = self.prepare_groups(weight_ty, n, act);
        self.dot_prepared_groups(weight_ty, n, groups, &act, out);
    }

    /// `dot_groups` with activations made by `prepare_groups` of this same table, one or a
    /// few: `out[t * n_rows + r]` = row `r` · activation `t`, token-major as
    /// [`Kernels::dot_groups_batch`] writes, each activation's sums bit for bit what it gets
    /// alone.
    ///
    /// # Panics
    /// As [`Kernels::dot_groups`], with `out.len()` the number of rows times the activations'.
    pub fn dot_prepared_groups(
        &self,
        weight_ty: GgmlType,
        n: usize,
        groups: &[u8],
        acts: &PreparedActivation,
        out: &mut [f32],
    ) {
        let (dot, group_len) = match (
            self.table.dot_groups[weight_ty as usize],
            self.group_len(weight_ty),
        ) {
            (Some(dot), Some(len)) => (dot, len),
            _ => panic!("no grouped kernels for {}", weight_ty.name()),
        };
        self.check_prepared(acts, weight_ty, n, Layout::Groups);
        if acts.count == 0 {
            assert!(out.is_empty(), "output length");
            return;
        }
        assert!(out.len().is_multiple_of(acts.count), "output length");
        let n_rows = out.len() / acts.count;
        assert!(n_rows.is_multiple_of(group_len), "whole groups of rows");
        let row_bytes = rows_checked(weight_ty, n, groups, n_rows);
        if row_bytes == 0 || n_rows == 0 {
            out.fill(0.0);
            return;
        }
        // SAFETY: as in `quantize_activation`; lengths checked above, and `acts` was made for
        // this kernel and length.
        unsafe { dot(groups, row_bytes, &acts.bytes, acts.count, out) }
    }

    /// [`Kernels::dot_rows_batch`] over rows grouped by [`Kernels::group_rows`].
    ///
    /// # Panics
    /// As [`Kernels::dot_groups`].
    pub fn dot_groups_batch(
        &self,
        weight_ty: GgmlType,
        n: usize,
        groups: &[u8],
        acts: &[u8],
        out: &mut [f32],
    ) {
        self.batch(weight_ty, n, groups, acts, out, Layout::Groups)
    }

    /// `dot_rows_batch` or `dot_groups_batch`: the same checks, and the layout's tiles.
    fn batch(
        &self,
        weight_ty: GgmlType,
        n: usize,
        rows: &[u8],
        acts: &[u8],
        out: &mut [f32],
        layout: Layout,
    ) {
        let tile = match layout {
            Layout::Rows => self.table.dot_tile[weight_ty as usize],
            Layout::Groups => match self.group_len(weight_ty) {
                Some(_) => self.table.dot_groups_tile[weight_ty as usize],
                None => panic!("no grouped kernels for {}", weight_ty.name()),
            },
        };
        let row_bytes = weight_ty
            .row_bytes(n)
            .unwrap_or_else(|| panic!("{} rows of {n} elements", weight_ty.name()));
        let act_bytes = weight_ty
            .vec_dot_type()
            .row_bytes(n)
            .expect("activation blocks match weight blocks");
        if row_bytes == 0 || act_bytes == 0 {
            out.fill(0.0);
            return;
        }
        // No rows or no activations: nothing to compute, and the tiles would divide by the
        // activation count or chunk by a row count of zero.
        if rows.is_empty() || acts.is_empty() {
            assert!(out.is_empty(), "output length");
            return;
        }
        assert_eq!(rows.len() % row_bytes, 0, "weight rows length");
        assert_eq!(acts.len() % act_bytes, 0, "activation rows length");
        let n_acts = acts.len() / act_bytes;
        assert_eq!(out.len(), rows.len() / row_bytes * n_acts, "output length");
        if layout == Layout::Groups {
            let group_len = self.group_len(weight_ty).expect("checked above");
            assert!(
                (rows.len() / row_bytes).is_multiple_of(group_len),
                "whole groups of rows"
            );
        }
        match tile {
            // SAFETY: as in `quantize_activation`.
            Some(tile) => unsafe { tile(rows, row_bytes, acts, n_acts, out) },
            None => {
                let n_rows = rows.len() / row_bytes;
                for (act, out) in acts
                    .chunks_exact(act_bytes)
                    .zip(out.chunks_exact_mut(n_rows))
                {
                    self.dot_rows(weight_ty, n, rows, act, out);
                }
            }
        }
    }

    /// `scores[q · n + i]` = the dot product, in f32, of query `q` (the `dim` halves of `queries`
    /// from `q · dim`) with key row `i` of `keys` (`n` rows of `dim` halves): the attention
    /// scores of queries that read the same keys, such as the query heads of one key head.
    /// A query's scores are the same whichever queries share the call.
    ///
    /// # Panics
    /// If `dim` is 0 or does not divide the lengths, or `scores` does not hold a score per
    /// query and key.
    pub fn attention_scores(
        &self,
        queries: &[half::f16],
        keys: &[half::f16],
        dim: usize,
        scores: &mut [f32],
    ) {
        let (n_queries, n_keys) = attention_shape(queries, keys, dim);
        assert_eq!(
            Some(scores.len()),
            n_queries.checked_mul(n_keys),
            "scores length"
        );
        if scores.is_empty() {
            return;
        }
        match self.table.attention_scores_f16 {
            // SAFETY: as in `quantize_activation`; lengths checked above.
            Some(scores_f16) => unsafe {
                scores_f16(halves_as_bytes(queries), halves_as_bytes(keys), dim, scores)
            },
            None => {
                for (query, scores) in queries
                    .chunks_exact(dim)
                    .zip(scores.chunks_exact_mut(n_keys))
                {
                    self.dot_rows(
                        GgmlType::F16,
                        dim,
                        halves_as_bytes(keys),
                        halves_as_bytes(query),
                        scores,
                    );
                }
            }
        }
    }

    /// For each query q: `out[q · dim + d] += Σ_i weights[q · n + i] · values[i · dim + d]`, the
    /// weighted sum of the `n` value rows, accumulated in f32 in the order of `i`. A query's
    /// sums are the same whichever queries share the call.
    ///
    /// # Panics
    /// If `dim` is 0 or does not divide the lengths of `values` and `out`, or `weights` does
    /// not hold a weight per query and value row.
    pub fn attention_values(
        &self,
        weights: &[f32],
        values: &[half::f16],
        dim: usize,
        out: &mut [f32],
    ) {
        assert!(dim > 0 && out.len().is_multiple_of(dim), "output length");
        let (n_rows, n_queries) = (values.len() / dim, out.len() / dim);
        assert_eq!(values.len() % dim, 0, "value rows length");
        assert_eq!(
            Some(weights.len()),
            n_queries.checked_mul(n_rows),
            "weights length"
        );
        if n_queries == 0 || n_rows == 0 {
            return;
        }
        // SAFETY: as in `quantize_activation`; lengths checked above.
        unsafe {
            (self.table.accumulate_f16_rows)(weights, halves_as_bytes(values), out, n_queries)
        }
    }

    /// Replaces each `x[i]` by e^(x[i] − max) and returns their sum, in llama.cpp's way on
    /// AVX-512 (a polynomial sixteen at a time, each sixteen summed in f32, then libm's `expf`
    /// for the rest) on every ISA, which agree bit for bit. `max` must be at least every
    /// element: the polynomial is only taken for exponents of at most 0.
    pub fn softmax_exponentials(&self, x: &mut [f32], max: f32) -> f64 {
        // SAFETY: as in `quantize_activation`.
        unsafe { (self.table.softmax_exponentials)(x, max) }
    }

    /// `x[i] = cap · tanh(x[i] / cap)`: Gemma's soft cap on attention scores and logits. tanh
    /// within 2 ulp, the same on every ISA bit for bit.
    pub fn soft_cap(&self, x: &mut [f32], cap: f32) {
        // SAFETY: as in `quantize_activation`.
        unsafe { (self.table.soft_cap)(x, cap) }
    }

    /// Converts one row of `ty` to f32 (embedding lookups). Supports every weight type plus
    /// the Q8_1 and Q8_K activation formats.
    ///
    /// # Panics
    /// If `ty` has no dequantizer or `src.len()` is not `ty.row_bytes(dst.len())`.
    pub fn dequantize_row(&self, ty: GgmlType, src: &[u8], dst: &mut [f32]) {
        let dequantize = self.table.dequantize[ty as usize]
            .unwrap_or_else(|| panic!("cannot dequantize {}", ty.name()));
        assert_eq!(
            Some(src.len()),
            ty.row_bytes(dst.len()),
            "{} row length",
            ty.name()
        );
        // SAFETY: as in `quantize_activation`.
        unsafe { dequantize(src, dst) }
    }
}

/// The bytes of a row of `n` elements of `weight_ty`, after checking that `rows` holds `count`
/// of them.
fn rows_checked(weight_ty: GgmlType, n: usize, rows: &[u8], count: usize) -> usize {
    let row_bytes = weight_ty
        .row_bytes(n)
        .unwrap_or_else(|| panic!("{} rows of {n} elements", weight_ty.name()));
    assert_eq!(
        Some(rows.len()),
        row_bytes.checked_mul(count),
        "weight rows length"
    );
    row_bytes
}

fn halves_as_bytes(halves: &[half::f16]) -> &[u8] {
    // SAFETY: `f16` is a transparent `u16`, which has no padding; any initialized memory is
    // valid `u8`s, and `u8` needs no alignment. The byte view borrows the same memory.
    unsafe { std::slice::from_raw_parts(halves.as_ptr().cast(), std::mem::size_of_val(halves)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_scalar_is_always_available() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>(), Ok(isa));
        }
        assert_eq!(" AVX2 ".parse::<Isa>(), Ok(Isa::Avx2));
        assert_eq!("sse".parse::<Isa>(), Err(IsaError::Unknown("sse".into())));
        assert_eq!(
            Kernels::for_isa(Isa::Scalar).map(|k| k.isa()),
            Some(Isa::Scalar)
        );
        let detected = Kernels::detect();
        let best = detected.isa();
        assert!(best.is_available());
        assert_ne!(
            best,
            Isa::Avx512Wide,
            "detect takes 512-bit rows type by type"
        );
        assert!(Isa::ALL
            .iter()
            .rev()
            .filter(|&&i| i != Isa::Avx512Wide)
            .take_while(|&&i| i != best)
            .all(|i| !i.is_available()));
        let wide = detected.wide_rows();
        #[cfg(target_arch = "x86_64")]
        if best == Isa::Avx512 {
            assert_eq!(wide, crate::x86::wide_row_types());
        }
        if best != Isa::Avx512 {
            assert!(wide.is_empty(), "{wide:?}");
        }
        let shown = detected.to_string();
        assert!(shown.starts_with(best.name()), "{shown}");
        assert_eq!(shown.contains("512-bit rows"), !wide.is_empty(), "{shown}");
    }

    #[test]
    fn an_activation_prepared_for_another_length_or_table_is_refused() {
        let refused = |k: &Kernels, prepared: &PreparedActivation, n: usize| {
            let rows = vec![0u8; Q4_K.row_bytes(n).unwrap()];
            let run = || k.dot_prepared_rows(Q4_K, n, &rows, prepared, &mut [0.0]);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err()
        };
        let k = Kernels::detect();
        let act = vec![0u8; Q4_K.vec_dot_type().row_bytes(256).unwrap()];
        let prepared = k.prepare_rows(Q4_K, 256, &act);
        assert!(!refused(&k, &prepared, 256));
        assert!(refused(&k, &prepared, 512));
        if let (Some(narrow), Some(wide)) = (
            Kernels::for_isa(Isa::Avx512),
            Kernels::for_isa(Isa::Avx512Wide),
        ) {
            let prepared = wide.prepare_rows(Q4_K, 256, &act);
            assert!(refused(&narrow, &prepared, 256));
            assert!(!refused(&wide, &prepared, 256));
        }
    }

    /// Grouped Q8_0 reads `ReadyQ8_0` blocks whose starts carry the grouped quants' offset of
    /// 128, where the row kernels' carry none: each must refuse the other's.
    #[test]
    fn an_activation_prepared_for_another_layout_is_refused() {
        let k = Kernels::detect();
        let Some(group_len) = k.group_len(Q8_0) else {
            eprintln!("no grouped Q8_0 kernels here");
            return;
        };
        let n = 64;
        let act = vec![0u8; Q8_0.row_bytes(n).unwrap()];
        let weights = vec![0u8; group_len * Q8_0.row_bytes(n).unwrap()];
        let mut out = vec![0.0; group_len];
        let (for_rows, for_groups) = (
            k.prepare_rows(Q8_0, n, &act),
            k.prepare_groups(Q8_0, n, &act),
        );
        let refused = |run: &mut dyn FnMut()| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err()
        };
        assert!(refused(
            &mut || k.dot_prepared_groups(Q8_0, n, &weights, &for_rows, &mut out)
        ));
        assert!(refused(&mut || k.dot_prepared_rows(
            Q8_0,
            n,
            &weights,
            &for_groups,
            &mut out
        )));
        assert!(!refused(&mut || k.dot_prepared_groups(
            Q8_0,
            n,
            &weights,
            &for_groups,
            &mut out
        )));
        assert!(!refused(
            &mut || k.dot_prepared_rows(Q8_0, n, &weights, &for_rows, &mut out)
        ));
    }

    #[test]
    fn other_architectures_are_unavailable() {
        if cfg!(target_arch = "x86_64") {
            assert!(Kernels::for_isa(Isa::Neon).is_none());
        }
        if cfg!(target_arch = "aarch64") {
            assert!(Kernels::for_isa(Isa::Avx2).is_none());
            assert!(Kernels::for_isa(Isa::Avx512).is_none());
        }
        let err = IsaError::Unavailable(Isa::Neon).to_string();
        assert!(err.contains("scalar"), "{err}");
    }

    #[test]
    fn every_supported_weight_has_a_dot_a_dequantizer_and_an_activation_quantizer() {
        let k = Kernels::for_isa(Isa::Scalar).unwrap();
        for id in 0..SLOTS as u32 {
            let Some(ty) = GgmlType::from_id(id) else {
                continue;
            };
            assert_eq!(
                k.table.dot_rows[id as usize].is_some(),
                ty.is_supported_weight()
            );
            if ty.is_supported_weight() {
                assert!(k.table.dequantize[id as usize].is_some());
                assert!(k.table.quantize[ty.vec_dot_type() as usize].is_some());
            }
        }
    }

    #[test]
    fn block_structs_agree_with_the_type_table() {
        use std::mem::size_of;
        let sizes = [
            (F32, size_of::<f32::F32>()),
            (F16, size_of::<f16::F16>()),
            (BF16, size_of::<bf16::Bf16>()),
            (Q4_0, size_of::<q4_0::BlockQ4_0>()),
            (Q4_1, size_of::<q4_1::BlockQ4_1>()),
            (Q5_0, size_of::<q5_0::BlockQ5_0>()),
            (Q5_1, size_of::<q5_1::BlockQ5_1>()),
            (Q8_0, size_of::<q8_0::BlockQ8_0>()),
            (Q8_1, size_of::<q8_1::BlockQ8_1>()),
            (Q4_K, size_of::<q4_k::BlockQ4K>()),
            (Q5_K, size_of::<q5_k::BlockQ5K>()),
            (Q6_K, size_of::<q6_k::BlockQ6K>()),
            (Q8_K, size_of::<q8_k::BlockQ8K>()),
        ];
        for (ty, size) in sizes {
            assert_eq!(ty.block_bytes(), size, "{}", ty.name());
        }
    }

    #[test]
    #[should_panic(expected = "activation row length")]
    fn mismatched_activation_length_panics() {
        let k = Kernels::for_isa(Isa::Scalar).unwrap();
        let rows = vec![0u8; 144];
        let act = vec![0u8; 100];
        k.dot_rows(Q4_K, 256, &rows, &act, &mut [0.0]);
    }

    #[test]
    fn zero_length_rows_give_zero() {
        let k = Kernels::detect();
        let mut out = [1.0f32; 3];
        k.dot_rows(Q4_K, 0, &[], &[], &mut out);
        assert_eq!(out, [0.0; 3]);
    }
}
