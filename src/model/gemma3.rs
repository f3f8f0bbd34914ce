//! Gemma 3: Gemma 2's layer plus RMS norms on each query and key head, no attention soft cap,
//! five sliding layers to one global, and a separate rope base for the sliding layers.

use super::ops::{Rope, RopeStyle};
use super::{sliding_layers, Common, FeedForward, LayerRecipe, ModelError, Recipe};
use crate::gguf::Gguf;

const SLIDING_BASE: f32 = 10000.0;
const LAYERS_OF_27B: usize = 62;

pub(super) fn recipe(gguf: &Gguf) -> Result<Recipe, ModelError> {
    let common = Common::read(gguf, "gemma3")?;
    let window = gguf
        .get_u32_opt("gemma3.attention.sliding_window")?
        .filter(|&w| w > 0)
        .map(|w| w as usize);
    let sliding = match window {
        Some(_) => sliding_layers(gguf, "gemma3", common.n_layer, 6)?,
        None => vec![false; common.n_layer],
    };
    let base_swa = gguf
        .get_f32_opt("gemma3.rope.freq_base_swa")?
        .unwrap_or(SLIDING_BASE);
    let layers = sliding
        .iter()
        .map(|&slides| LayerRecipe {
            rope: Rope {
                style: RopeStyle::Neox,
                dims: common.head_dim,
                base: if slides { base_swa } else { common.rope_base },
                freq_scale: if slides { 1.0 } else { common.rope_freq_scale },
            },
            window: if slides { window } else { None },
        })
        .collect();
    let query_scale = super::gemma2::query_scale(&common, LAYERS_OF_27B);
    Ok(Recipe {
        scale_embeddings: true,
        post_norms: true,
        qk_norms: true,
        ffn: FeedForward::GeluGated,
        attn_soft_cap: None,
        final_soft_cap: gguf
            .get_f32_opt("gemma3.final_logit_softcapping")?
            .filter(|&cap| cap != 0.0),
        query_scale,
        layers,
        common,
    })
}
