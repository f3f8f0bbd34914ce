//! x86-64 kernels, compiled on every x86-64 build and chosen at run time.

use crate::block::{as_blocks, Block};
use crate::q8_0::BlockQ8_0;
use crate::types::GgmlType;
use std::mem::size_of;

pub(crate) mod avx2;
pub(crate) mod avx512;
mod kernels;
pub(crate) mod wide_rows;

/// AVX2 kernels also use FMA and F16C, which every AVX2 CPU in practice has.
pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The AVX-512 kernels use 512-bit integer ops (BW), 256-bit VNNI forms (VL + VNNI), and
/// fall back to the AVX2 kernels for some types.
pub(crate) fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// The types whose 512-bit row kernels (`wide_rows`) run faster on this CPU than the 256-bit
/// ones, by make. Zen 4 splits each 512-bit operation in two, so only a kernel whose pace is
/// set by its instruction count gains: measured with the dot_rows bench (2304 columns, one
/// core, GB/s, 256 / 512 bits), Q4_K 23.4 / 27.4 in L2 and 21.6 / 23.5 from memory; Q6_K 33.6 /
/// 33.1; Q8_0 33.1 / 29.4; Q4_0 14.9 / 15.1; Q5_0 14.9 / 15.7. Intel's AVX-512 cores with VNNI
/// (Ice Lake, Sapphire Rapids and later) run 512-bit operations at full width, where each of
/// these kernels does half the instructions per byte; not yet measured there.
pub(crate) fn wide_row_types() -> &'static [GgmlType] {
    use GgmlType::*;
    let leaf = std::arch::x86_64::__cpuid(0);
    let vendor: Vec<u8> = [leaf.ebx, leaf.edx, leaf.ecx]
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .collect();
    match &vendor[..] {
        b"GenuineIntel" => &[Q4_K, Q6_K, Q8_0, Q5_0, Q4_0],
        b"AuthenticAMD" => &[Q4_K],
        _ => &[],
    }
}

/// A Q8_0 activation block with what the 256-bit row kernels and the grouped kernels need of
/// it alone, worked out once per matrix (`Kernels::prepare_rows`, `Kernels::prepare_groups`)
/// instead of once per task of rows: its scale in f32, and the start of each block sum,
/// `−offset·Σa`, the share of the offset by which a weight format's unsigned quants exceed its
/// values (Q4_0: 8, Q5_0: 16; Q8_0's signed quants: 0, grouped Q8_0's: 128).
#[repr(C)]
pub(crate) struct ReadyQ8_0 {
    pub(crate) qs: [i8; 32],
    scale: [u8; 4],
    start: [u8; 4],
}
const _: () = assert!(size_of::<ReadyQ8_0>() == 40);

// SAFETY: repr(C), only byte arrays, 40 bytes.
unsafe impl Block for ReadyQ8_0 {}

impl ReadyQ8_0 {
    #[inline(always)]
    pub(crate) fn scale(&self) -> f32 {
        f32::from_le_bytes(self.scale)
    }

    #[inline(always)]
    pub(crate) fn start(&self) -> i32 {
        i32::from_le_bytes(self.start)
    }
}

/// The sum of a Q8_0 activation block's quants: a weight format whose unsigned quants stand for
/// `q − offset` owes `−offset` times this to each block's dot product.
pub(crate) fn quant_sum(a: &BlockQ8_0) -> i32 {
    a.qs.iter().map(|&q| i32::from(q)).sum()
}

/// Q8_0 activation rows `acts` as `ReadyQ8_0` blocks for weights whose quants are `F`'s.
fn ready<F: kernels::Quants32>(acts: &[u8]) -> Vec<u8> {
    let blocks = as_blocks::<BlockQ8_0>(acts);
    let mut ready = Vec::with_capacity(blocks.len() * size_of::<ReadyQ8_0>());
    for a in blocks {
        ready.extend(a.qs.iter().map(|&q| q as u8));
        ready.extend(a.d().to_le_bytes());
        ready.extend(kernels::offset_sum::<F>(a).flat_map(i32::to_le_bytes));
    }
    ready
}
