//! The single-file bundle: the engine executable with a zip appended that holds the GGUF
//! (stored, 64 KiB-aligned, mapped in place) and optionally `.args`, default arguments.
//!
//! At start the program finds its own file, reads the zip at its end (if any), and expands
//! `.args` before the command line is parsed, so a mode flag inside `.args` takes effect.

mod args;
mod info;
mod model;
mod pack;
mod progress;
#[cfg(test)]
mod testing;
mod zip;

pub use args::expand_args;
pub use info::info;
pub use model::{resolve_model, MappedModel, Placement};
pub use pack::{pack, PackOptions};

use crate::gguf::GgufError;
use args::ARGS_ENTRY;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use zip::Archive;

/// `.args` is a few lines of flags; anything bigger is not what we wrote.
const MAX_ARGS_LEN: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {problem}", path.display())]
    Corrupt { path: PathBuf, problem: String },
    #[error("{name} is stored compressed; rebuild it with llmfile pack")]
    Compressed { name: String },
    #[error("{name} is encrypted; rebuild it with llmfile pack")]
    Encrypted { name: String },
    #[error(
        "{name} starts at byte {offset} of its file, not on a 32-byte boundary, so it cannot be \
         mapped in place; rebuild it with llmfile pack"
    )]
    Misaligned { name: String, offset: u64 },
    #[error("{name} is empty")]
    EmptyModel { name: String },
    #[error("{name} is too large to map on this platform")]
    TooLargeToMap { name: String },
    #[error(".args: the {quote} quote opened on line {line} is never closed")]
    ArgsUnclosedQuote { quote: char, line: usize },
    #[error(".args: `...` appears more than once; the user's arguments can go in one place only")]
    ArgsMarkerTwice,
    #[error("{}: .args is not UTF-8 text", path.display())]
    ArgsNotUtf8 { path: PathBuf },
    #[error("no model given: pass -m MODEL.gguf (this executable carries no model)")]
    NoModel,
    #[error("this executable carries several models ({names}); choose one with -m NAME")]
    SeveralModels { names: String },
    #[error("no file or embedded model named {name}{embedded}")]
    ModelNotFound { name: String, embedded: String },
    #[error("{} holds no .gguf entry", path.display())]
    NoGgufInArchive { path: PathBuf },
    #[error("{} holds several .gguf entries ({names}); extract the one you want", path.display())]
    SeveralGgufInArchive { path: PathBuf, names: String },
    #[error("{} is neither a GGUF file nor an llmfile or zip holding one", path.display())]
    NotAModel { path: PathBuf },
    #[error("{} is not a GGUF file (it does not start with \"GGUF\")", path.display())]
    NotGguf { path: PathBuf },
    #[error("{} has no file name usable as a zip entry name (it must be UTF-8)", path.display())]
    BadEntryName { path: PathBuf },
    #[error("the model's file name may not be {ARGS_ENTRY}, which holds default arguments")]
    ReservedEntryName,
    #[error("the model and the draft model are both named {name}; rename one")]
    SameEntryName { name: String },
    #[error("entry name {name} is longer than the 65535 bytes a zip allows")]
    NameTooLong { name: String },
    #[error("cannot find this program's own executable file; name the file to use")]
    OwnExecutableNotFound,
    #[error("{name}: {source}")]
    Gguf { name: String, source: GgufError },
}

/// The file this program was started from: `current_exe` (on Linux, /proc/self/exe), else
/// argv[0] resolved against the working directory or PATH as the shell would have.
pub fn own_executable() -> Option<PathBuf> {
    if let Ok(exe) = std::env::current_exe() {
        if exe.is_file() {
            return Some(exe);
        }
    }
    let argv0 = std::env::args_os().next()?;
    let cwd = std::env::current_dir().ok();
    resolve_argv0(
        Path::new(&argv0),
        std::env::var_os("PATH").as_deref(),
        cwd.as_deref(),
    )
}

fn resolve_argv0(argv0: &Path, path_var: Option<&OsStr>, cwd: Option<&Path>) -> Option<PathBuf> {
    let within_cwd = |p: &Path| match cwd {
        Some(cwd) => cwd.join(p),
        None => p.to_path_buf(),
    };
    if argv0.as_os_str().is_empty() {
        return None;
    }
    // A name with a directory part was not looked up in PATH by the shell either.
    if argv0.components().count() > 1 || argv0.is_absolute() {
        let candidate = within_cwd(argv0);
        return candidate.is_file().then_some(candidate);
    }
    std::env::split_paths(path_var?)
        .map(|dir| within_cwd(&dir.join(argv0)))
        .find(|candidate| candidate.is_file())
}

fn open(path: &Path) -> Result<File, BundleError> {
    File::open(path).map_err(|source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The zip appended to this program, if it can find its own file and something is appended.
fn own_archive() -> Result<Option<Archive>, BundleError> {
    let Some(exe) = own_executable() else {
        return Ok(None);
    };
    Archive::read(&open(&exe)?, &exe)
}

fn embedded_args_text(archive: &Archive) -> Result<Option<String>, BundleError> {
    let Some(entry) = archive.find(ARGS_ENTRY) else {
        return Ok(None);
    };
    let bytes = archive.read_small(entry, MAX_ARGS_LEN)?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| BundleError::ArgsNotUtf8 {
            path: archive.path().to_path_buf(),
        })
}

/// The command line to parse: `argv` (the program name first) with this executable's `.args`
/// expanded into it. A program with nothing appended gets `argv` back unchanged.
pub fn expand_own_args(argv: Vec<OsString>) -> Result<Vec<OsString>, BundleError> {
    let mut argv = argv.into_iter();
    let program = argv.next().unwrap_or_default();
    let embedded = match own_archive()? {
        Some(archive) => embedded_args_text(&archive)?,
        None => None,
    };
    let mut expanded = vec![program];
    expanded.extend(expand_args(embedded.as_deref(), argv.collect())?);
    Ok(expanded)
}

fn is_gguf_name(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".gguf")
}

fn gguf_entries(archive: &Archive) -> Vec<&zip::Entry> {
    archive
        .entries
        .iter()
        .filter(|e| !e.is_dir() && is_gguf_name(&e.name))
        .collect()
}

fn join_names(entries: &[&zip::Entry]) -> String {
    entries
        .iter()
        .map(|e| e.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv0_with_a_directory_resolves_against_cwd() {
        let dir = std::env::temp_dir().join(format!("llmfile-argv0-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/prog"), b"x").unwrap();
        assert_eq!(
            resolve_argv0(Path::new("bin/prog"), None, Some(&dir)),
            Some(dir.join("bin/prog"))
        );
        assert_eq!(resolve_argv0(Path::new("bin/none"), None, Some(&dir)), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bare_argv0_is_searched_in_path() {
        let dir = std::env::temp_dir().join(format!("llmfile-path-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::create_dir_all(dir.join("b")).unwrap();
        std::fs::write(dir.join("b/prog"), b"x").unwrap();
        let path_var = std::env::join_paths([dir.join("a"), dir.join("b")]).unwrap();
        assert_eq!(
            resolve_argv0(Path::new("prog"), Some(&path_var), None),
            Some(dir.join("b/prog"))
        );
        assert_eq!(resolve_argv0(Path::new("prog"), None, None), None);
        assert_eq!(resolve_argv0(Path::new(""), Some(&path_var), None), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn test_binary_runs_as_a_plain_engine() {
        // The test harness has nothing appended: no error, arguments pass through untouched.
        let exe = own_executable().expect("the test binary exists");
        assert!(Archive::read(&open(&exe).unwrap(), &exe).unwrap().is_none());
        let argv: Vec<OsString> = ["llmfile", "-p", "hi"].map(OsString::from).into();
        assert_eq!(expand_own_args(argv.clone()).unwrap(), argv);
    }
}
