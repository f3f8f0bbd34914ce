//! A model opened once: the weights (mapped from a file, from inside a bundle, or held in
//! memory), the transformer that reads them, the tokenizer and the chat format. Every front
//! end, benchmark, test and fuzz target opens its model here, so the load chain exists once.
//!
//! An `Engine` is shared by `Arc`: the server's scheduler and its HTTP workers, the CLI and the
//! tests hold the same one without threading a borrowed lifetime through their types.

use crate::bundle::{self, BundleError, MappedModel, Placement};
use crate::chat_template::{ChatTemplate, TemplateError, TemplateTokens};
use crate::embedding::Pooling;
use crate::gguf::facts::Facts;
use crate::gguf::{Gguf, GgufError};
use crate::model::{self, ModelError, Transformer};
use crate::session::{Session, SessionError};
use crate::tokenizer::{Tokenizer, TokenizerError};
use kernels::Kernels;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(
        "placing {source_name} as --no-mmap or --repack asks (--mmap maps it as it is): {error}"
    )]
    Placement {
        source_name: String,
        error: std::io::Error,
    },
    #[error("{source_name}: {error}")]
    Gguf {
        source_name: String,
        error: GgufError,
    },
    #[error("{source_name}: {error}")]
    Model {
        source_name: String,
        error: ModelError,
    },
    #[error("{source_name}: {error}")]
    Tokenizer {
        source_name: String,
        error: TokenizerError,
    },
    #[error(transparent)]
    ChatTemplate(#[from] TemplateError),
}

/// How to open a model file.
#[derive(Clone)]
pub struct OpenOptions {
    pub placement: Placement,
    /// No progress bar while copying or faulting in the weights.
    pub quiet: bool,
    /// Read the mapped weights in before returning (llama.cpp's warm-up), so the first
    /// request does not pay for the page faults.
    pub warm_up: bool,
    pub kernels: Kernels,
    /// `--chat-template`: a built-in format's name or a Jinja file, over the model's own.
    pub chat_template: Option<String>,
    /// Rewrite the weights, where they are the process's own (`Placement::Memory` copies them,
    /// `Placement::Private` maps them copy-on-write), into the layouts the kernels read fastest
    /// (`model::group_weights`); `--no-repack` says no. Shared mapped weights stay as the file
    /// has them.
    pub repack: bool,
}

/// What the API tells clients about the model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    pub template: Arc<ChatTemplate>,
    /// What the file says of itself, for the APIs that list models.
    pub facts: Arc<Facts>,
    /// The width of the hidden states, so of every embedding.
    pub n_embd: usize,
    /// The pooling the GGUF names for embeddings, if any.
    pub pooling: Option<Pooling>,
}

impl ModelInfo {
    /// `chat_template` (a built-in name or a Jinja file) replaces the GGUF's own template;
    /// `source_name` names the file in errors.
    pub fn new(
        gguf: &Gguf,
        tokenizer: &Tokenizer,
        chat_template: Option<&str>,
        source_name: &str,
    ) -> Result<ModelInfo, EngineError> {
        let in_file = |error| EngineError::Gguf {
            source_name: source_name.to_string(),
            error,
        };
        let architecture = gguf.architecture().map_err(in_file)?.to_string();
        let name = gguf
            .get_str_opt("general.name")
            .map_err(in_file)?
            .map_or_else(|| architecture.clone(), str::to_string);
        let text = |id: Option<u32>| {
            id.map(|id| String::from_utf8_lossy(tokenizer.token_to_piece(id, true)).into_owned())
                .unwrap_or_default()
        };
        let tokens = TemplateTokens {
            bos: text(tokenizer.bos()),
            eos: text(tokenizer.eos()),
            tokenizer_adds_bos: tokenizer.add_bos(),
        };
        let template = match chat_template {
            Some(name) => ChatTemplate::named(name, &architecture, &tokens)?,
            None => ChatTemplate::for_model(
                &architecture,
                gguf.get_str_opt("tokenizer.chat_template")
                    .map_err(in_file)?,
                &tokens,
            ),
        };
        let n_embd = gguf
            .get_u32(&format!("{architecture}.embedding_length"))
            .map_err(in_file)? as usize;
        Ok(ModelInfo {
            pooling: Pooling::from_gguf(gguf),
            name,
            architecture,
            template: Arc::new(template),
            facts: Arc::default(),
            n_embd,
        })
    }
}

/// The bytes of a GGUF, wherever they live. Both kinds keep their bytes at one address for
/// as long as they exist, however the value itself moves.
enum Weights {
    Mapped(MappedModel),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Weights {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Weights::Mapped(map) => map,
            Weights::Owned(bytes) => bytes,
        }
    }
}

pub struct Engine {
    /// Borrows from `weights`, which is why it is declared (and so dropped) before them.
    model: Transformer<'static>,
    tokenizer: Tokenizer,
    info: ModelInfo,
    weights: Weights,
}

impl Engine {
    /// Opens the model `-m NAME` names (see [`bundle::resolve_model`]: a file, an entry of this
    /// executable, or this executable's single GGUF when `name` is None) and places its
    /// weights as `options` ask.
    pub fn open(name: Option<&Path>, options: &OpenOptions) -> Result<Arc<Engine>, EngineError> {
        let mut map = bundle::resolve_model(name)?;
        let source_name = map.to_string();
        // The bundle's name when the model rides in one, else the GGUF's: what a user calls it.
        let file_name = map.path().file_stem().map_or_else(
            || map.name().to_string(),
            |stem| stem.to_string_lossy().into_owned(),
        );
        map.place(options.placement, options.quiet)
            .map_err(|error| EngineError::Placement {
                source_name: source_name.clone(),
                error,
            })?;
        if options.warm_up {
            map.fault_in(options.quiet);
        }
        let grouped = match map.bytes_mut() {
            Some(bytes) if options.repack => model::group_weights(bytes, &options.kernels)
                .map_err(|error| EngineError::Gguf {
                    source_name: source_name.clone(),
                    error,
                })?,
            _ => false,
        };
        Engine::load(
            Weights::Mapped(map),
            source_name,
            file_name,
            options.kernels,
            options.chat_template.as_deref(),
            grouped,
        )
    }

    /// A model from bytes in memory: tests, fuzz targets and GGUFs made on the fly.
    pub fn from_bytes(bytes: Vec<u8>, kernels: Kernels) -> Result<Arc<Engine>, EngineError> {
        Engine::load(
            Weights::Owned(bytes),
            "the GGUF in memory".into(),
            "model".into(),
            kernels,
            None,
            false,
        )
    }

    /// [`Engine::from_bytes`] with the weights grouped as `--no-mmap` groups them.
    pub fn from_bytes_grouped(
        mut bytes: Vec<u8>,
        kernels: Kernels,
    ) -> Result<Arc<Engine>, EngineError> {
        let source_name = "the GGUF in memory".to_string();
        let grouped =
            model::group_weights(&mut bytes, &kernels).map_err(|error| EngineError::Gguf {
                source_name: source_name.clone(),
                error,
            })?;
        Engine::load(
            Weights::Owned(bytes),
            source_name,
            "model".into(),
            kernels,
            None,
            grouped,
        )
    }

    fn load(
        weights: Weights,
        source_name: String,
        file_name: String,
        kernels: Kernels,
        chat_template: Option<&str>,
        grouped: bool,
    ) -> Result<Arc<Engine>, EngineError> {
        // SAFETY: the bytes of `weights` stay at one address, unchanged, until `weights` is
        // dropped (a mapping or a Vec, neither written after the weights were regrouped, before
        // this point), and the engine
        // drops `model`, the only holder of this borrow, before `weights`. The 'static never
        // leaves the engine: `model()` hands it out shortened to a borrow of the engine.
        let bytes: &'static [u8] =
            unsafe { std::slice::from_raw_parts(weights.as_ptr(), weights.len()) };
        let gguf = Gguf::parse(bytes).map_err(|error| EngineError::Gguf {
            source_name: source_name.clone(),
            error,
        })?;
        let model = model::load(&gguf, kernels, grouped).map_err(|error| EngineError::Model {
            source_name: source_name.clone(),
            error,
        })?;
        let tokenizer = Tokenizer::from_gguf(&gguf).map_err(|error| EngineError::Tokenizer {
            source_name: source_name.clone(),
            error,
        })?;
        let info = ModelInfo {
            facts: Arc::new(Facts {
                file_name,
                ..Facts::read(&gguf, bytes)
            }),
            ..ModelInfo::new(&gguf, &tokenizer, chat_template, &source_name)?
        };
        Ok(Arc::new(Engine {
            model,
            tokenizer,
            info,
            weights,
        }))
    }

    pub fn model(&self) -> &Transformer<'_> {
        &self.model
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The GGUF's header again, for what only the file describes (tensor sizes, metadata).
    pub fn gguf(&self) -> Gguf<'_> {
        Gguf::parse(&self.weights).expect("the same bytes parsed when the engine opened")
    }

    /// Locks the weights in memory (`--mlock`), so the system never pages them out.
    pub fn lock_in_memory(&self) -> std::io::Result<()> {
        lock_memory(&self.weights)
    }

    /// A conversation with a KV cache of `n_ctx` positions.
    pub fn session(self: &Arc<Self>, n_ctx: usize) -> Result<Session, SessionError> {
        Session::new(Arc::clone(self), n_ctx)
    }
}

#[cfg(unix)]
fn lock_memory(bytes: &[u8]) -> std::io::Result<()> {
    // SAFETY: mlock only changes how the kernel pages the range, which is the live allocation
    // or mapping `bytes` borrows.
    let status = unsafe { libc::mlock(bytes.as_ptr().cast(), bytes.len()) };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn lock_memory(_: &[u8]) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "locking memory is supported on Linux and macOS only",
    ))
}
