use super::*;

/// Writes GGUF bytes field by field, so each test can corrupt exactly one thing.
struct Builder {
    bytes: Vec<u8>,
}

impl Builder {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Builder {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(version.to_le_bytes());
        bytes.extend(n_tensors.to_le_bytes());
        bytes.extend(n_kv.to_le_bytes());
        Builder { bytes }
    }

    fn string(mut self, s: &str) -> Builder {
        self.bytes.extend((s.len() as u64).to_le_bytes());
        self.bytes.extend(s.as_bytes());
        self
    }

    fn u32(mut self, v: u32) -> Builder {
        self.bytes.extend(v.to_le_bytes());
        self
    }

    fn u64(mut self, v: u64) -> Builder {
        self.bytes.extend(v.to_le_bytes());
        self
    }

    fn kv_u32(self, key: &str, v: u32) -> Builder {
        self.string(key).u32(4).u32(v)
    }

    fn kv_str(self, key: &str, v: &str) -> Builder {
        self.string(key).u32(8).string(v)
    }

    fn tensor_info(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Builder {
        let mut b = self.string(name).u32(dims.len() as u32);
        for &d in dims {
            b = b.u64(d);
        }
        b.u32(ty).u64(offset)
    }

    fn data(mut self, alignment: usize, data: &[u8]) -> Vec<u8> {
        while !self.bytes.len().is_multiple_of(alignment) {
            self.bytes.push(0);
        }
        self.bytes.extend(data);
        self.bytes
    }
}

fn valid_file() -> Vec<u8> {
    let data: Vec<u8> = (0..16u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    Builder::header(3, 2, 3)
        .kv_str("general.architecture", "gemma2")
        .kv_u32("gemma2.block_count", 4)
        .string("tokenizer.ggml.tokens")
        .u32(9)
        .u32(8)
        .u64(2)
        .string("a")
        .string("b")
        .tensor_info("first", &[4, 2], 0, 0)
        .tensor_info("second", &[8], 0, 32)
        .data(32, &data)
}

#[test]
fn parses_metadata_and_tensor_views() {
    let bytes = valid_file();
    let gguf = Gguf::parse(&bytes).unwrap();
    assert_eq!(gguf.version, 3);
    assert_eq!(gguf.architecture().unwrap(), "gemma2");
    assert_eq!(gguf.get_u32("gemma2.block_count").unwrap(), 4);
    let tokens = gguf.get_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens[1].as_str(), Some("b"));

    let first = gguf.tensor("first").unwrap();
    assert_eq!((first.row_len(), first.n_rows()), (4, 2));
    assert_eq!(first.data.len(), 32);
    assert_eq!(&first.data[4..8], &1f32.to_le_bytes());
    let second = gguf.tensor("second").unwrap();
    assert_eq!(&second.data[..4], &8f32.to_le_bytes());
}

#[test]
fn a_tensor_with_empty_rows_counts_its_rows() {
    // Found by the gguf_parse fuzz target: n_rows divided by a zero row length.
    let bytes = Builder::header(3, 1, 0)
        .tensor_info("empty", &[0, 3], 0, 0)
        .data(32, &[]);
    let gguf = Gguf::parse(&bytes).unwrap();
    let empty = gguf.tensor("empty").unwrap();
    assert_eq!(
        (empty.row_len(), empty.n_rows(), empty.data.len()),
        (0, 3, 0)
    );
}

#[test]
fn typed_accessors_report_missing_and_mistyped_keys() {
    let bytes = valid_file();
    let gguf = Gguf::parse(&bytes).unwrap();
    assert!(matches!(
        gguf.get_u32("gemma2.nope"),
        Err(GgufError::MissingKey(_))
    ));
    assert!(matches!(
        gguf.get_u32("general.architecture"),
        Err(GgufError::WrongType { .. })
    ));
    assert_eq!(gguf.get_f32_opt("gemma2.nope").unwrap(), None);
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let bytes = valid_file();
    for len in 0..bytes.len() {
        assert!(Gguf::parse(&bytes[..len]).is_err(), "length {len} parsed");
    }
}

#[test]
fn rejects_bad_magic_and_versions() {
    let mut bytes = valid_file();
    bytes[0] = b'X';
    assert!(matches!(Gguf::parse(&bytes), Err(GgufError::BadMagic(_))));
    let mut bytes = valid_file();
    bytes[4] = 1;
    assert!(matches!(
        Gguf::parse(&bytes),
        Err(GgufError::UnsupportedVersion(1))
    ));
    assert!(Gguf::parse(&Builder::header(2, 0, 0).data(1, &[])).is_ok());
}

#[test]
fn absurd_counts_fail_before_allocating() {
    let bytes = Builder::header(3, u64::MAX, u64::MAX).data(1, &[]);
    assert!(matches!(
        Gguf::parse(&bytes),
        Err(GgufError::Truncated { .. })
    ));
    let bytes = Builder::header(3, 0, 1)
        .string("huge")
        .u32(9)
        .u32(4)
        .u64(u64::MAX / 2)
        .data(1, &[]);
    assert!(matches!(
        Gguf::parse(&bytes),
        Err(GgufError::Truncated { .. })
    ));
    let bytes = Builder::header(3, 0, 1).u64(u64::MAX).data(1, &[]);
    assert!(matches!(
        Gguf::parse(&bytes),
        Err(GgufError::Truncated { .. })
    ));
}

#[test]
fn rejects_overflowing_and_out_of_bounds_tensors() {
    let overflow = Builder::header(3, 1, 0)
        .tensor_info("t", &[1 << 32, 1 << 32, 1 << 32], 0, 0)
        .data(32, &[0; 64]);
    assert!(matches!(
        Gguf::parse(&overflow),
        Err(GgufError::BadShape { .. })
    ));

    let past_end = Builder::header(3, 1, 0)
        .tensor_info("t", &[32], 0, 0)
        .data(32, &[0; 64]);
    assert!(matches!(
        Gguf::parse(&past_end),
        Err(GgufError::TensorOutOfBounds { .. })
    ));

    let misaligned = Builder::header(3, 1, 0)
        .tensor_info("t", &[2], 0, 4)
        .data(32, &[0; 64]);
    assert!(matches!(
        Gguf::parse(&misaligned),
        Err(GgufError::Misaligned { .. })
    ));

    let partial_block = Builder::header(3, 1, 0)
        .tensor_info("t", &[33], 12, 0)
        .data(32, &[0; 4096]);
    assert!(matches!(
        Gguf::parse(&partial_block),
        Err(GgufError::BadShape { .. })
    ));
}

#[test]
fn rejects_unknown_types() {
    let unknown_tensor = Builder::header(3, 1, 0)
        .tensor_info("t", &[2], 999, 0)
        .data(32, &[0; 64]);
    assert!(matches!(
        Gguf::parse(&unknown_tensor),
        Err(GgufError::UnknownTensorType { type_id: 999, .. })
    ));
    let unknown_value = Builder::header(3, 0, 1).string("k").u32(77).data(1, &[]);
    assert!(matches!(
        Gguf::parse(&unknown_value),
        Err(GgufError::UnknownValueType { type_id: 77, .. })
    ));
    let bad_dims = Builder::header(3, 1, 0)
        .tensor_info("t", &[1, 1, 1, 1, 1], 0, 0)
        .data(32, &[0; 64]);
    assert!(matches!(
        Gguf::parse(&bad_dims),
        Err(GgufError::TooManyDims { .. })
    ));
}

/// Every K-quant from Q2_K to Q6_K loads; an i-quant is refused with its tensor's name.
#[test]
fn refuses_only_the_types_without_kernels() {
    let with_type = |ty: u32| {
        Builder::header(3, 1, 0)
            .tensor_info("blk.0.ffn_up.weight", &[256], ty, 0)
            .data(32, &[0; 256])
    };
    for (id, name) in [
        (10, "Q2_K"),
        (11, "Q3_K"),
        (12, "Q4_K"),
        (13, "Q5_K"),
        (14, "Q6_K"),
    ] {
        assert!(Gguf::parse(&with_type(id)).is_ok(), "{name}");
    }
    let iq4_xs = with_type(23);
    let err = Gguf::parse(&iq4_xs).err().expect("IQ4_XS has no kernels");
    assert!(matches!(err, GgufError::UnsupportedTensorType { .. }));
    assert_eq!(
        err.to_string(),
        "tensor 'blk.0.ffn_up.weight' has type iq4_xs, which this engine cannot compute with"
    );
}

#[test]
fn honours_general_alignment() {
    let data: Vec<u8> = (0..8u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let bytes = Builder::header(3, 1, 1)
        .kv_u32("general.alignment", 64)
        .tensor_info("t", &[8], 0, 0)
        .data(64, &data);
    let gguf = Gguf::parse(&bytes).unwrap();
    assert_eq!(&gguf.tensor("t").unwrap().data[4..8], &1f32.to_le_bytes());

    let bad = Builder::header(3, 0, 1)
        .kv_u32("general.alignment", 48)
        .data(1, &[]);
    assert!(matches!(
        Gguf::parse(&bad),
        Err(GgufError::BadAlignment(48))
    ));
}

#[test]
fn reads_the_real_models_when_present() {
    for name in [
        "gemma-3-270m-q4_k_m.gguf",
        "smollm2-135m-instruct-q4_1.gguf",
    ] {
        let Some(path) = crate::test_models::path(name) else {
            continue;
        };
        let bytes = std::fs::read(&path).unwrap();
        let gguf = Gguf::parse(&bytes).unwrap();
        assert!(gguf.tensors().len() > 10);
        assert!(gguf.get_array("tokenizer.ggml.tokens").unwrap().len() > 1000);
    }
}
