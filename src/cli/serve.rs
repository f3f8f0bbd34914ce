//! `llmfile --server` (and no mode flag at all): the chat page and the HTTP API.

use super::{context_size, open_run_engine, RunArgs};
use crate::server::{self, ServerConfig};
use anyhow::Result;

pub(super) fn run(args: RunArgs) -> Result<()> {
    if let Some(layers) = args.n_gpu_layers {
        eprintln!("llmfile: -ngl {layers} ignored: this engine runs on the CPU");
    }
    let grammar = args.sampling.grammar()?;
    let engine = open_run_engine(&args, false)?;
    let speculator = args.speculation.open(&engine, &args.model)?;
    let serve = args.serve;
    let config = ServerConfig {
        host: serve.host,
        port: serve.port,
        slots: serve.parallel,
        n_ctx: context_size(args.ctx_size, engine.model().hparams.context_length),
        sampling: args.sampling.params(&engine)?,
        grammar,
        context_shift: args.context_shift,
        n_predict: args.n_predict,
        api_key: serve.api_key,
        open_browser: !serve.nobrowser,
        batch_size: serve.batch_size,
        ubatch_size: serve.ubatch_size,
        slots_endpoint: serve.slots,
        speculator,
        metrics_endpoint: serve.metrics,
        spm_infill: serve.spm_infill,
        pooling: serve.pooling,
    };
    server::serve(&engine, &config)?;
    Ok(())
}
