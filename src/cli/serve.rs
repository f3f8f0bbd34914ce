//! `llmfile --server` (and no mode flag at all): the chat page and the HTTP API.

use super::{context_size, load_model, LoadedFile, RunArgs};
use crate::server::{self, ModelInfo, ServerConfig};
use anyhow::{Context, Result};

pub(super) fn run(args: RunArgs) -> Result<()> {
    if let Some(layers) = args.n_gpu_layers {
        eprintln!("llmfile: -ngl {layers} ignored: this engine runs on the CPU");
    }
    let file = LoadedFile::open(&args.model, false)?;
    let (gguf, model, tokenizer) = load_model(&file, &args.model)?;
    let info = ModelInfo::from_gguf(&gguf).with_context(|| file.path.clone())?;
    let serve = args.serve;
    let config = ServerConfig {
        host: serve.host,
        port: serve.port,
        slots: serve.parallel,
        n_ctx: context_size(args.ctx_size, model.hparams.context_length),
        sampling: (&args.sampling).into(),
        n_predict: args.n_predict,
        api_key: serve.api_key,
        open_browser: !serve.nobrowser,
    };
    server::serve(&model, &tokenizer, &info, &config)?;
    Ok(())
}
