//! What a model file says of itself at a glance: its size, parameter count, quantization and
//! metadata, as model registries (Ollama's `/api/tags` and `/api/show`) list a model.

use super::{Gguf, Value};
use kernels::GgmlType;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The stem of the file the model came from (a bundle or a GGUF), which Ollama's API lists
    /// it under.
    pub file_name: String,
    /// Bytes of the GGUF, weights included.
    pub size: u64,
    /// Elements of every tensor.
    pub parameters: u64,
    /// llama.cpp's name of the file's quantization ("Q4_K_M"), from `general.file_type`, or
    /// failing that the type most of the weights have.
    pub quantization: String,
    /// SHA-256 of the GGUF's header (its metadata and tensor table) in hex: it tells models
    /// apart without reading gigabytes of weights at start.
    pub digest: String,
    /// The metadata in the file's order; arrays (the vocabulary, its merges) are left empty,
    /// as Ollama lists them unless asked to be verbose.
    pub metadata: Vec<(String, Value)>,
}

impl Facts {
    /// `bytes` are the whole file that `gguf` was parsed from.
    pub fn read(gguf: &Gguf, bytes: &[u8]) -> Facts {
        let header_end = gguf
            .tensors()
            .iter()
            .map(|t| (t.data.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize))
            .filter(|&offset| offset <= bytes.len())
            .min()
            .unwrap_or(bytes.len());
        let digest = Sha256::digest(&bytes[..header_end])
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let metadata = gguf
            .metadata()
            .iter()
            .map(|(key, value)| match value {
                Value::Array(_) => (key.clone(), Value::Array(Vec::new())),
                other => (key.clone(), other.clone()),
            })
            .collect();
        Facts {
            file_name: String::new(),
            size: bytes.len() as u64,
            parameters: gguf.tensors().iter().map(|t| t.n_elements()).sum(),
            quantization: quantization(gguf),
            digest,
            metadata,
        }
    }
}

fn quantization(gguf: &Gguf) -> String {
    let named = gguf
        .get("general.file_type")
        .and_then(Value::as_i64)
        .and_then(file_type_name);
    if let Some(name) = named {
        return name.to_string();
    }
    // Without the key, the type of most weight elements (the embeddings and norms aside,
    // which are often kept wider, weigh less than the layers together).
    let mut counts: Vec<(GgmlType, u64)> = Vec::new();
    for tensor in gguf.tensors().iter().filter(|t| t.dims.len() >= 2) {
        match counts.iter_mut().find(|(ty, _)| *ty == tensor.ty) {
            Some((_, n)) => *n += tensor.n_elements(),
            None => counts.push((tensor.ty, tensor.n_elements())),
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(_, n)| n)
        .map_or_else(|| "unknown".to_string(), |(ty, _)| ty.name().to_uppercase())
}

/// llama.cpp's `llama_ftype` names, by the number `general.file_type` stores.
fn file_type_name(id: i64) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4",
        _ => return None,
    })
}
