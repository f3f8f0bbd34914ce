//! AArch64 kernels, compiled on every AArch64 build and chosen at run time.

pub(crate) mod neon;

pub(crate) fn has_neon() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}
