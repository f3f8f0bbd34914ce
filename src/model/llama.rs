//! Llama: pre-norm layers, rope on adjacent pairs, SwiGLU FFN, no soft caps.

use super::ops::{Rope, RopeStyle};
use super::{Common, FeedForward, LayerRecipe, ModelError, Recipe};
use crate::gguf::Gguf;

pub(super) fn recipe(gguf: &Gguf) -> Result<Recipe, ModelError> {
    let common = Common::read(gguf, "llama")?;
    let rope_dims = gguf
        .get_u32_opt("llama.rope.dimension_count")?
        .map_or(common.head_dim, |d| d as usize);
    if rope_dims > common.head_dim || rope_dims % 2 != 0 {
        return Err(ModelError::BadHyperparameter(format!(
            "rope dimension count {rope_dims} does not fit a head of {}",
            common.head_dim
        )));
    }
    let layer = LayerRecipe {
        rope: Rope {
            style: RopeStyle::Adjacent,
            dims: rope_dims,
            base: common.rope_base,
            freq_scale: common.rope_freq_scale,
        },
        window: None,
    };
    Ok(Recipe {
        scale_embeddings: false,
        post_norms: false,
        qk_norms: false,
        ffn: FeedForward::SiluGated,
        attn_soft_cap: None,
        final_soft_cap: None,
        query_scale: 1.0 / (common.head_dim as f32).sqrt(),
        layers: vec![layer; common.n_layer],
        common,
    })
}
