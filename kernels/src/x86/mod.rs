//! x86-64 kernels, compiled on every x86-64 build and chosen at run time.

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
