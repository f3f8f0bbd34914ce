//! Gemma 2: pre- and post-norms around attention and the FFN, GELU gated FFN, soft caps on
//! attention scores (50) and logits (30), sliding-window attention on even layers.

use super::ops::{Rope, RopeStyle};
use super::{sliding_layers, Common, FeedForward, LayerRecipe, ModelError, Recipe};
use crate::gguf::Gguf;

const DEFAULT_WINDOW: usize = 4096;
const LAYERS_OF_27B: usize = 46;

pub(super) fn recipe(gguf: &Gguf) -> Result<Recipe, ModelError> {
    let common = Common::read(gguf, "gemma2")?;
    let window = gguf
        .get_u32_opt("gemma2.attention.sliding_window")?
        .map_or(DEFAULT_WINDOW, |w| w as usize);
    // A window of no positions would leave the sliding layers nothing to attend to.
    if window == 0 {
        return Err(ModelError::BadHyperparameter(
            "gemma2.attention.sliding_window must be positive".into(),
        ));
    }
    let base_swa = gguf
        .get_f32_opt("gemma2.rope.freq_base_swa")?
        .unwrap_or(common.rope_base);
    let sliding = sliding_layers(gguf, "gemma2", common.n_layer, 2)?;
    let layers = sliding
        .iter()
        .map(|&slides| LayerRecipe {
            rope: Rope {
                style: RopeStyle::Neox,
                dims: common.head_dim,
                base: if slides { base_swa } else { common.rope_base },
                freq_scale: common.rope_freq_scale,
            },
            window: slides.then_some(window),
        })
        .collect();
    let query_scale = query_scale(&common, LAYERS_OF_27B);
    Ok(Recipe {
        scale_embeddings: true,
        post_norms: true,
        qk_norms: false,
        ffn: FeedForward::GeluGated,
        attn_soft_cap: Some(
            gguf.get_f32_opt("gemma2.attn_logit_softcapping")?
                .unwrap_or(50.0),
        ),
        final_soft_cap: Some(
            gguf.get_f32_opt("gemma2.final_logit_softcapping")?
                .unwrap_or(30.0),
        ),
        query_scale,
        layers,
        common,
    })
}

/// Gemma's 27B models scale queries by 1/sqrt(n_embd / n_head), the others by 1/sqrt(head_dim);
/// llama.cpp tells them apart by layer count, and so do we.
pub(super) fn query_scale(common: &Common, layers_of_27b: usize) -> f32 {
    if common.n_layer == layers_of_27b {
        1.0 / ((common.n_embd / common.n_head) as f32).sqrt()
    } else {
        1.0 / (common.head_dim as f32).sqrt()
    }
}
