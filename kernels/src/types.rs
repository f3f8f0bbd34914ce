//! The tensor types a GGUF file can name, with ggml's numeric ids and block geometry.

/// A ggml tensor type. The discriminant is the id stored in GGUF tensor infos.
///
/// Every type ggml defines is listed so that a GGUF reader can size any tensor, but only the
/// ones for which [`GgmlType::is_supported_weight`] holds have kernels here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
    Q2_0 = 42,
}

use GgmlType::*;

const ALL: [GgmlType; 35] = [
    F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ2_XXS,
    IQ2_XS, IQ3_XXS, IQ1_S, IQ4_NL, IQ3_S, IQ2_S, IQ4_XS, I8, I16, I32, I64, F64, IQ1_M, BF16,
    TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0, Q2_0,
];

impl GgmlType {
    /// The type with ggml id `id`, or `None` for ids ggml never assigned or has retired
    /// (4, 5, 31–33, 36–38).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        ALL.iter().copied().find(|t| t.id() == id)
    }

    /// ggml's numeric id, as stored in GGUF.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// ggml's name for the type ("q4_K", "bf16", ...), as printed by llama.cpp.
    pub fn name(self) -> &'static str {
        match self {
            F32 => "f32",
            F16 => "f16",
            Q4_0 => "q4_0",
            Q4_1 => "q4_1",
            Q5_0 => "q5_0",
            Q5_1 => "q5_1",
            Q8_0 => "q8_0",
            Q8_1 => "q8_1",
            Q2_K => "q2_K",
            Q3_K => "q3_K",
            Q4_K => "q4_K",
            Q5_K => "q5_K",
            Q6_K => "q6_K",
            Q8_K => "q8_K",
            IQ2_XXS => "iq2_xxs",
            IQ2_XS => "iq2_xs",
            IQ3_XXS => "iq3_xxs",
            IQ1_S => "iq1_s",
            IQ4_NL => "iq4_nl",
            IQ3_S => "iq3_s",
            IQ2_S => "iq2_s",
            IQ4_XS => "iq4_xs",
            I8 => "i8",
            I16 => "i16",
            I32 => "i32",
            I64 => "i64",
            F64 => "f64",
            IQ1_M => "iq1_m",
            BF16 => "bf16",
            TQ1_0 => "tq1_0",
            TQ2_0 => "tq2_0",
            MXFP4 => "mxfp4",
            NVFP4 => "nvfp4",
            Q1_0 => "q1_0",
            Q2_0 => "q2_0",
        }
    }

    /// Elements per block; a row's length must be a multiple of it.
    pub fn block_len(self) -> usize {
        match self {
            F32 | F16 | BF16 | I8 | I16 | I32 | I64 | F64 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | IQ4_NL | MXFP4 => 32,
            Q2_0 | NVFP4 => 64,
            Q1_0 => 128,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K | IQ2_XXS | IQ2_XS | IQ3_XXS | IQ1_S
            | IQ3_S | IQ2_S | IQ4_XS | IQ1_M | TQ1_0 | TQ2_0 => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            I8 => 1,
            F16 | BF16 | I16 => 2,
            F32 | I32 => 4,
            I64 | F64 => 8,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q8_1 => 36,
            Q2_K => 84,
            Q3_K => 110,
            Q4_K => 144,
            Q5_K => 176,
            Q6_K => 210,
            Q8_K => 292,
            IQ2_XXS => 66,
            IQ2_XS => 74,
            IQ3_XXS => 98,
            IQ1_S => 50,
            IQ4_NL => 18,
            IQ3_S => 110,
            IQ2_S => 82,
            IQ4_XS => 136,
            IQ1_M => 56,
            TQ1_0 => 54,
            TQ2_0 => 66,
            MXFP4 => 17,
            NVFP4 => 36,
            Q1_0 => 18,
            Q2_0 => 18,
        }
    }

    /// Bytes in a row of `n` elements; `None` when `n` is not a whole number of blocks or the
    /// size overflows `usize`.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_len()) {
            return None;
        }
        (n / self.block_len()).checked_mul(self.block_bytes())
    }

    /// Whether this crate can multiply and dequantize weights of this type.
    pub fn is_supported_weight(self) -> bool {
        matches!(
            self,
            F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K
        )
    }

    /// The format activations are converted to before a dot product with weights of this type,
    /// as in llama.cpp's `type_traits_cpu`. Types with no dot product there (the integer types,
    /// F64, Q8_1, Q8_K) return themselves.
    pub fn vec_dot_type(self) -> GgmlType {
        match self {
            Q4_0 | Q5_0 | Q8_0 | IQ4_NL | MXFP4 | NVFP4 | Q1_0 | Q2_0 => Q8_0,
            Q4_1 | Q5_1 => Q8_1,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ2_XXS | IQ2_XS | IQ3_XXS | IQ1_S | IQ3_S
            | IQ2_S | IQ4_XS | IQ1_M | TQ1_0 | TQ2_0 => Q8_K,
            F32 | F16 | BF16 | Q8_1 | Q8_K | I8 | I16 | I32 | I64 | F64 => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_retired_ids_are_unknown() {
        for t in ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t), "{}", t.name());
        }
        for retired in [4, 5, 31, 32, 33, 36, 37, 38, 43, u32::MAX] {
            assert_eq!(GgmlType::from_id(retired), None);
        }
        assert_eq!(GgmlType::from_id(12), Some(Q4_K));
        assert_eq!(GgmlType::from_id(30), Some(BF16));
    }

    #[test]
    fn row_bytes_checks_block_multiples_and_overflow() {
        assert_eq!(Q4_K.row_bytes(2048), Some(8 * 144));
        assert_eq!(Q4_K.row_bytes(2047), None);
        assert_eq!(Q8_0.row_bytes(64), Some(68));
        assert_eq!(F16.row_bytes(3), Some(6));
        assert_eq!(Q4_K.row_bytes(0), Some(0));
        assert_eq!(F64.row_bytes(usize::MAX), None);
        assert_eq!(Q8_K.row_bytes(usize::MAX / 256 * 256), None); // 292 bytes per 256
    }

    #[test]
    fn dot_types_follow_llama_cpp() {
        assert_eq!(Q4_K.vec_dot_type(), Q8_K);
        assert_eq!(Q5_K.vec_dot_type(), Q8_K);
        assert_eq!(Q6_K.vec_dot_type(), Q8_K);
        assert_eq!(Q4_0.vec_dot_type(), Q8_0);
        assert_eq!(Q5_0.vec_dot_type(), Q8_0);
        assert_eq!(Q8_0.vec_dot_type(), Q8_0);
        assert_eq!(Q4_1.vec_dot_type(), Q8_1);
        assert_eq!(Q5_1.vec_dot_type(), Q8_1);
        assert_eq!(F16.vec_dot_type(), F16);
        assert_eq!(BF16.vec_dot_type(), BF16);
        assert_eq!(F32.vec_dot_type(), F32);
        assert!(ALL.iter().filter(|t| t.is_supported_weight()).count() == 13);
    }

    #[test]
    fn names_match_ggml() {
        assert_eq!(Q4_K.name(), "q4_K");
        assert_eq!(Q8_0.name(), "q8_0");
        assert_eq!(BF16.name(), "bf16");
        assert_eq!(IQ4_XS.name(), "iq4_xs");
    }
}
