//! AVX-512 kernels: the AVX2 algorithms on 256-bit registers with the VNNI instructions
//! `vpdpbusd` and `vpdpwssd`, which fuse the multiply-adds and the accumulation. (On Zen 4 a
//! 512-bit op costs two 256-bit ones, and these kernels are bound by memory bandwidth, so
//! wider registers would add shuffles without adding speed.)

/// Activation rows per eight-row tile: eight accumulators and eight transposed quant registers
/// fit the 32 vector registers with room to spare.
const ROW_LANE_ACTS: usize = 8;

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
