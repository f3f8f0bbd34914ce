//! Viewing byte slices as blocks, and the helpers every block format shares.
//!
//! Tensor data comes from a mapped GGUF file in which a tensor is only 32-byte aligned and
//! block sizes such as 18 or 210 bytes leave most blocks at odd addresses. Every block struct
//! is therefore built from byte arrays only (alignment 1), so a block reference is valid at
//! any address, and multi-byte fields are decoded with `from_le_bytes`.

use std::mem::{align_of, size_of};

/// A block format laid out exactly as ggml stores it.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, contain only `u8`/`i8` arrays (so alignment is 1, there
/// is no padding and every bit pattern is a valid value), and have `size_of` equal to ggml's
/// block size.
pub(crate) unsafe trait Block: Sized {}

/// Views `bytes` as blocks. Panics if `bytes` is not a whole number of blocks.
pub(crate) fn as_blocks<B: Block>(bytes: &[u8]) -> &[B] {
    const { assert!(align_of::<B>() == 1) };
    assert_eq!(
        bytes.len() % size_of::<B>(),
        0,
        "not a whole number of blocks"
    );
    // SAFETY: `B: Block` has alignment 1 and accepts any bit pattern, and the length is a
    // whole number of `B`, so the cast covers exactly the borrowed bytes.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), bytes.len() / size_of::<B>()) }
}

/// Views `bytes` as mutable blocks. Panics if `bytes` is not a whole number of blocks.
pub(crate) fn as_blocks_mut<B: Block>(bytes: &mut [u8]) -> &mut [B] {
    const { assert!(align_of::<B>() == 1) };
    assert_eq!(
        bytes.len() % size_of::<B>(),
        0,
        "not a whole number of blocks"
    );
    // SAFETY: as in `as_blocks`; the exclusive borrow of `bytes` moves to the result.
    unsafe {
        std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), bytes.len() / size_of::<B>())
    }
}

/// Decodes a little-endian IEEE half.
#[inline]
pub(crate) fn f16_to_f32(bytes: [u8; 2]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes(bytes)).to_f32()
}

/// Encodes an f32 as a little-endian IEEE half, rounding to nearest even as ggml does
/// (`GGML_FP32_TO_FP16`, `vcvtps2ph` with round-to-nearest).
#[inline]
pub(crate) fn f32_to_f16(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

/// Runs `dot` on each weight row and the activation row, writing one result per row.
///
/// `rows` holds `out.len()` rows of equal length; `act` is one activation row.
#[inline(always)]
pub(crate) fn for_each_row<W: Block, A: Block>(
    rows: &[u8],
    act: &[u8],
    out: &mut [f32],
    mut dot: impl FnMut(&[W], &[A]) -> f32,
) {
    if out.is_empty() {
        return;
    }
    let act = as_blocks::<A>(act);
    let row_bytes = rows.len() / out.len();
    if row_bytes == 0 {
        out.fill(0.0);
        return;
    }
    for (row, o) in rows.chunks_exact(row_bytes).zip(out.iter_mut()) {
        *o = dot(as_blocks::<W>(row), act);
    }
}

/// The rows of a grouped layout (`q4_k::BlockQ4KGroup` and the others of its kind): one per
/// 32-bit lane of a 256-bit register.
pub(crate) const GROUP_ROWS: usize = 8;

/// Rewrites eight rows of blocks `B` (`rows`, each `row_bytes` long) as groups `G` in
/// `group`, block by block: `fill` gets a group and block b of each row.
pub(crate) fn group_blocks<B: Block, G: Block>(
    rows: &[u8],
    row_bytes: usize,
    group: &mut [u8],
    fill: impl Fn(&mut G, [&B; GROUP_ROWS]),
) {
    let rows: Vec<&[B]> = rows.chunks_exact(row_bytes).map(as_blocks).collect();
    assert_eq!(rows.len(), GROUP_ROWS, "a group is eight rows");
    for (b, g) in as_blocks_mut::<G>(group).iter_mut().enumerate() {
        fill(g, std::array::from_fn(|r| &rows[r][b]));
    }
}

/// Eight rows' blocks' bytes (4·W of each) as their groups hold them: `[k][r]` is bytes
/// 4k..4k+3 of row r's, so that one 32-byte load holds four of every row (the nibbles of
/// Q4_0, Q4_1, Q5_0 and Q5_1, Q5_K's fifth bits).
pub(crate) fn group_words<const W: usize>(bytes: [&[u8]; 8]) -> [[[u8; 4]; 8]; W] {
    assert!(bytes.iter().all(|b| b.len() == 4 * W), "{W} words a row");
    std::array::from_fn(|k| std::array::from_fn(|r| bytes[r][4 * k..4 * k + 4].try_into().unwrap()))
}

/// Row r's bytes back out of `group_words`.
pub(crate) fn row_words<const W: usize>(
    words: &[[[u8; 4]; 8]; W],
    r: usize,
) -> impl Iterator<Item = u8> + '_ {
    words.iter().flat_map(move |w| w[r])
}
