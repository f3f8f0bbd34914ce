//! `llmfile pack`: engine + zip(model, .args) = one executable file.

use super::args::{self, ARGS_ENTRY};
use super::progress::Progress;
use super::zip::{copy_exact, Archive, ZipWriter};
use super::{open, own_executable, BundleError};
use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct PackOptions {
    /// The GGUF to embed; its file name becomes the entry name.
    pub model: PathBuf,
    pub output: PathBuf,
    /// A draft model for speculative decoding, embedded beside the model; `.args` then start
    /// with `-m MODEL -md DRAFT`, which name the two entries.
    pub draft: Option<PathBuf>,
    /// Default arguments, stored as `.args`.
    pub args: Option<String>,
    /// The engine to copy; the running executable when `None`.
    pub engine: Option<PathBuf>,
    pub quiet: bool,
}

/// Writes `output`: the engine (without any zip it already carries), then a zip holding the
/// model stored on a 64 KiB boundary and `.args` if given. The same inputs give the same bytes.
/// The file appears whole or not at all (written beside it, then renamed), and is executable.
pub fn pack(opts: &PackOptions) -> Result<(), BundleError> {
    if let Some(text) = &opts.args {
        args::validate(text)?;
    }
    let model = model_input(&opts.model)?;
    let draft = opts.draft.as_deref().map(model_input).transpose()?;
    let args = match &draft {
        None => opts.args.clone(),
        Some(draft) => {
            if draft.1 == model.1 {
                return Err(BundleError::SameEntryName { name: model.1 });
            }
            let naming = format!("-m \"{}\" -md \"{}\"\n", model.1, draft.1);
            Some(naming + opts.args.as_deref().unwrap_or_default())
        }
    };

    let engine_path = match &opts.engine {
        Some(path) => path.clone(),
        None => own_executable().ok_or(BundleError::OwnExecutableNotFound)?,
    };
    let engine = open(&engine_path)?;
    let windows_engine = is_windows_executable(&engine);
    // Packing from a bundle (the usual case once llmfile ships as one) must copy only the
    // engine, or every repack would nest the previous model inside the new file.
    let engine_len = match Archive::read(&engine, &engine_path)? {
        Some(archive) => archive.prefix_len,
        None => file_len(&engine, &engine_path)?,
    };
    let inputs = Inputs {
        engine: Input {
            file: engine,
            path: engine_path,
            len: engine_len,
        },
        models: std::iter::once(model).chain(draft).collect(),
        args,
    };

    let temp = temp_path(&opts.output);
    let result = write_bundle(opts, &inputs, &temp).and_then(|()| {
        fs::rename(&temp, &opts.output).map_err(|source| BundleError::Io {
            path: opts.output.clone(),
            source,
        })
    });
    if result.is_err() {
        // The partial file is useless and may be gigabytes; the original error matters more.
        let _ = fs::remove_file(&temp);
    }
    result?;
    if windows_engine {
        let written = fs::metadata(&opts.output).map_err(|source| BundleError::Io {
            path: opts.output.clone(),
            source,
        })?;
        if let Some(warning) = windows_size_warning(&opts.output, written.len()) {
            eprintln!("{warning}");
        }
    }
    Ok(())
}

/// Windows refuses to start an executable file this large or larger, whatever it holds.
const WINDOWS_EXE_LIMIT: u64 = 1 << 32;

/// A PE file (what Windows runs) starts with the DOS header's "MZ".
fn is_windows_executable(engine: &File) -> bool {
    let mut reader = engine;
    let mut magic = [0u8; 2];
    reader.read_exact(&mut magic).is_ok() && magic == *b"MZ"
}

/// The packed file is still useful past the limit, as a model for a plain engine, so this is a
/// warning and the file is kept.
fn windows_size_warning(output: &Path, len: u64) -> Option<String> {
    (len >= WINDOWS_EXE_LIMIT).then(|| {
        format!(
            "warning: {} is {:.1} GiB; Windows will not start an executable of 4 GiB or more. \
             Run the model with the plain engine instead: llmfile.exe -m MODEL.gguf, or \
             llmfile.exe -m {} (it reads the model inside)",
            output.display(),
            len as f64 / (1u64 << 30) as f64,
            output.display()
        )
    })
}

struct Input {
    file: File,
    path: PathBuf,
    /// How many bytes to copy from its start.
    len: u64,
}

impl Input {
    fn reader_from_start(&self) -> Result<&File, BundleError> {
        let mut reader = &self.file;
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|source| BundleError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(reader)
    }
}

struct Inputs {
    engine: Input,
    /// The model, then the draft model if any, each with its entry name.
    models: Vec<(Input, String)>,
    args: Option<String>,
}

/// A GGUF to embed, and its entry name: its file name.
fn model_input(path: &Path) -> Result<(Input, String), BundleError> {
    let entry_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.contains('"'))
        .ok_or_else(|| BundleError::BadEntryName {
            path: path.to_path_buf(),
        })?
        .to_string();
    if entry_name == ARGS_ENTRY {
        return Err(BundleError::ReservedEntryName);
    }
    let file = open(path)?;
    let len = file_len(&file, path)?;
    let mut magic = [0u8; 4];
    if (&file).read_exact(&mut magic).is_err() || &magic != b"GGUF" {
        return Err(BundleError::NotGguf {
            path: path.to_path_buf(),
        });
    }
    let input = Input {
        file,
        path: path.to_path_buf(),
        len,
    };
    Ok((input, entry_name))
}

fn write_bundle(opts: &PackOptions, inputs: &Inputs, temp: &Path) -> Result<(), BundleError> {
    let out_error = |source| BundleError::Io {
        path: temp.to_path_buf(),
        source,
    };
    let file = File::create(temp).map_err(out_error)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let engine = &inputs.engine;
    let models_len: u64 = inputs.models.iter().map(|(model, _)| model.len).sum();
    let mut progress = Progress::new(
        format!("packing {}", opts.output.display()),
        engine.len + models_len,
        opts.quiet,
    );
    let mut advance = |n| progress.advance(n);

    let mut reader = engine.reader_from_start()?;
    copy_exact(
        &mut reader,
        &engine.path,
        &mut out,
        temp,
        engine.len,
        &mut advance,
    )?;

    let mut zip = ZipWriter::new(out, temp, engine.len);
    for (model, entry_name) in &inputs.models {
        let mut reader = model.reader_from_start()?;
        zip.add_stored(
            entry_name,
            model.len,
            &mut reader,
            &model.path,
            &mut advance,
        )?;
    }
    if let Some(text) = &inputs.args {
        zip.add_stored(
            ARGS_ENTRY,
            text.len() as u64,
            &mut text.as_bytes(),
            Path::new(ARGS_ENTRY),
            &mut |_| {},
        )?;
    }
    let mut out = zip.finish(engine.len)?;
    out.flush().map_err(out_error)?;
    progress.finish();

    let file = out.into_inner().map_err(|e| out_error(e.into_error()))?;
    make_executable(&file).map_err(out_error)
}

#[cfg(unix)]
fn make_executable(file: &File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn make_executable(_file: &File) -> std::io::Result<()> {
    Ok(())
}

fn file_len(file: &File, path: &Path) -> Result<u64, BundleError> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// A sibling of `output`, so the final rename stays on one file system. Writing there also
/// lets `output` name the running engine or the model being read.
fn temp_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".pack-{}.tmp", std::process::id()));
    output.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::testing::TempDir;

    #[test]
    fn windows_size_warning_starts_at_4_gib() {
        let output = Path::new("big.llmfile.exe");
        assert_eq!(windows_size_warning(output, WINDOWS_EXE_LIMIT - 1), None);
        let warning = windows_size_warning(output, WINDOWS_EXE_LIMIT + (1 << 29)).unwrap();
        assert!(warning.contains("big.llmfile.exe is 4.5 GiB"), "{warning}");
        assert!(warning.contains("-m MODEL.gguf"), "{warning}");
    }

    #[test]
    fn only_pe_engines_count_as_windows_executables() {
        let dir = TempDir::new();
        let pe = dir.write("engine.exe", b"MZ\x90\x00 rest of a PE header");
        let elf = dir.write("engine", b"\x7fELF rest of an ELF header");
        let tiny = dir.write("one-byte", b"M");
        assert!(is_windows_executable(&open(&pe).unwrap()));
        assert!(!is_windows_executable(&open(&elf).unwrap()));
        assert!(!is_windows_executable(&open(&tiny).unwrap()));
    }
}
