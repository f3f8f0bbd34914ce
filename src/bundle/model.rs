//! Finding the model the user means and mapping it read-only, in place, with no copy.

use super::progress::Progress;
use super::zip::{check_mappable, Archive, Entry};
use super::{gguf_entries, join_names, open, own_archive, BundleError};
use memmap2::{Mmap, MmapMut, MmapOptions};
use std::fmt;
use std::fs::File;
use std::io;
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// GGUF aligns tensor data to (by default) 32 bytes from the start of the GGUF; the mapping
/// keeps that promise only if the GGUF itself starts on such a boundary.
const GGUF_ALIGNMENT: u64 = 32;
/// Below this size the first forward pass faults the model in fast enough to go unnoticed.
const BIG_MODEL: usize = 128 << 20;
const PAGE: usize = 4096;
/// The size of a transparent huge page on x86-64 and on ARM64 with 4 KiB pages.
const HUGE_PAGE: usize = 2 << 20;
/// Bytes copied between progress updates when loading into memory.
const COPY_CHUNK: usize = 64 << 20;

/// Where the weights stay while the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Mapped from the file in place, never copied (the default): shared between processes,
    /// and the kernel may drop pages under memory pressure and read them again later.
    Mapped,
    /// Copied into anonymous memory (`--no-mmap`), asking for transparent huge pages.
    Memory,
    /// Mapped copy-on-write (`--repack` without `--no-mmap`): shared with the page cache until
    /// the loader rewrites a page, which then becomes the process's own (in 4 KiB pages).
    Private,
}

/// Bytes of the model that are this process's own.
enum Own {
    /// A copy in anonymous memory.
    Memory(MmapMut),
    /// The file mapped copy-on-write.
    Private(MmapMut),
}

/// A GGUF mapped read-only from a file on disk or from inside an llmfile or zip.
pub struct MappedModel {
    map: Mmap,
    /// The GGUF's length: a copy in memory is rounded up to whole huge pages.
    len: usize,
    /// The copy in anonymous memory (`Placement::Memory`) or the private mapping
    /// (`Placement::Private`), which the bytes then are. It stays writable: the loader may
    /// rewrite weights in place into the layout its kernels read.
    own: Option<Own>,
    name: String,
    path: PathBuf,
    offset: u64,
    embedded: bool,
}

impl MappedModel {
    /// The entry name inside a bundle, or the file name of a plain GGUF.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file holding the bytes: the GGUF itself, or the llmfile or zip that carries it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the GGUF starts in `path()`.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads every page once, drawing a progress bar on stderr, so that a model coming from a
    /// cold disk shows progress rather than a silent first token. Does nothing when `quiet`,
    /// when stderr is not a terminal, or for models small enough to load unnoticed.
    pub fn fault_in(&self, quiet: bool) {
        if self.in_memory() || quiet || self.len() < BIG_MODEL || !std::io::stderr().is_terminal() {
            return;
        }
        let mut progress =
            Progress::new(format!("loading {}", self.name), self.len() as u64, quiet);
        for chunk in self.chunks(PAGE * 1024) {
            for page_start in (0..chunk.len()).step_by(PAGE) {
                std::hint::black_box(chunk[page_start]);
            }
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
    }

    /// Whether the weights were copied into memory rather than mapped.
    pub fn in_memory(&self) -> bool {
        matches!(self.own, Some(Own::Memory(_)))
    }

    /// The bytes, writable, where they are this process's own: copied (`Placement::Memory`) or
    /// mapped privately (`Placement::Private`).
    pub fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        let len = self.len;
        match &mut self.own {
            Some(Own::Memory(bytes) | Own::Private(bytes)) => Some(&mut bytes[..len]),
            None => None,
        }
    }

    /// Moves the GGUF into memory if `placement` asks for it. Generation reads every weight
    /// once per token, and reads from huge pages run faster than from the file's 4 KiB pages
    /// (fewer TLB misses): on the 2B-shaped Gemma 2, 10.8 → 12.4 tokens/s with one thread and
    /// 16.1 → 18.7 with two. The cost is a copy at start and memory that is the process's own,
    /// so it is asked for, never the default.
    pub fn place(&mut self, placement: Placement, quiet: bool) -> io::Result<()> {
        match placement {
            Placement::Memory if !self.in_memory() => {
                self.own = Some(Own::Memory(self.copy_to_memory(quiet)?));
            }
            Placement::Private if self.own.is_none() => {
                let file = File::open(&self.path)?;
                // SAFETY: as the shared mapping in `map_range`; writes stay in this process.
                let private = unsafe {
                    MmapOptions::new()
                        .offset(self.offset)
                        .len(self.len)
                        .map_copy(&file)?
                };
                self.own = Some(Own::Private(private));
            }
            _ => {}
        }
        Ok(())
    }

    /// Copies chunk by chunk, releasing each chunk of the mapping once copied, so that the
    /// process never holds both copies (peak resident memory stays about one model).
    fn copy_to_memory(&self, quiet: bool) -> io::Result<MmapMut> {
        let mut memory = MmapOptions::new()
            .len(self.len.next_multiple_of(HUGE_PAGE))
            .map_anon()?;
        #[cfg(target_os = "linux")]
        let _ = memory.advise(memmap2::Advice::HugePage);
        let mut progress = Progress::new(
            format!("loading {}", self.name),
            self.len as u64,
            quiet || self.len < BIG_MODEL,
        );
        for start in (0..self.len).step_by(COPY_CHUNK) {
            let end = (start + COPY_CHUNK).min(self.len);
            memory[start..end].copy_from_slice(&self.map[start..end]);
            // SAFETY: the mapping is shared, read-only and backed by the file, so dropping its
            // pages only makes a later read fetch the same bytes from the file again; nothing
            // can observe a change.
            #[cfg(unix)]
            unsafe {
                let _ = self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                );
            }
            progress.advance((end - start) as u64);
        }
        progress.finish();
        Ok(memory)
    }
}

impl Deref for MappedModel {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.own {
            Some(Own::Memory(bytes) | Own::Private(bytes)) => &bytes[..self.len],
            None => &self.map[..self.len],
        }
    }
}

impl fmt::Display for MappedModel {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.embedded {
            write!(f, "{} (in {})", self.name, self.path.display())
        } else {
            write!(f, "{}", self.path.display())
        }
    }
}

impl fmt::Debug for MappedModel {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "MappedModel({self}, {} bytes at {})",
            self.len(),
            self.offset
        )
    }
}

/// The model for `-m NAME`: a file on disk (a GGUF, or an llmfile or zip holding exactly one
/// GGUF); else the entry of that name inside this executable. Without `-m`, the single GGUF
/// this executable carries.
pub fn resolve_model(name: Option<&Path>) -> Result<MappedModel, BundleError> {
    let model = resolve_with(name, own_archive)?;
    model.advise_will_need();
    Ok(model)
}

/// `resolve_model` with the program's own archive supplied by `own`, read only when needed.
fn resolve_with(
    name: Option<&Path>,
    own: impl FnOnce() -> Result<Option<Archive>, BundleError>,
) -> Result<MappedModel, BundleError> {
    if let Some(name) = name {
        if name.is_file() {
            return open_model_file(name);
        }
        let own = own()?;
        let entry_name = name.to_str();
        let found = own.as_ref().and_then(|a| Some((a, a.find(entry_name?)?)));
        if let Some((archive, entry)) = found {
            return map_entry(archive, entry);
        }
        let carried = own.as_ref().map(gguf_entries).unwrap_or_default();
        let embedded = if carried.is_empty() {
            String::new()
        } else {
            format!(" (this executable carries {})", join_names(&carried))
        };
        return Err(BundleError::ModelNotFound {
            name: name.display().to_string(),
            embedded,
        });
    }
    let archive = own()?.ok_or(BundleError::NoModel)?;
    match gguf_entries(&archive)[..] {
        [] => Err(BundleError::NoModel),
        [entry] => map_entry(&archive, entry),
        ref several => Err(BundleError::SeveralModels {
            names: join_names(several),
        }),
    }
}

/// A file named on the command line: a GGUF as is, or the single GGUF inside an llmfile/zip.
fn open_model_file(path: &Path) -> Result<MappedModel, BundleError> {
    let file = open(path)?;
    if let Some(model) = open_gguf_file(&file, path)? {
        return Ok(model);
    }
    let archive = Archive::read(&file, path)?.ok_or_else(|| BundleError::NotAModel {
        path: path.to_path_buf(),
    })?;
    match gguf_entries(&archive)[..] {
        [] => Err(BundleError::NoGgufInArchive {
            path: path.to_path_buf(),
        }),
        [entry] => map_entry(&archive, entry),
        ref several => Err(BundleError::SeveralGgufInArchive {
            path: path.to_path_buf(),
            names: join_names(several),
        }),
    }
}

/// The whole file mapped, if it is a bare GGUF; `None` if it does not start with the magic.
pub(super) fn open_gguf_file(file: &File, path: &Path) -> Result<Option<MappedModel>, BundleError> {
    let mut magic = [0u8; 4];
    let mut reader = file;
    let is_gguf = reader.seek(SeekFrom::Start(0)).is_ok()
        && reader.read_exact(&mut magic).is_ok()
        && &magic == b"GGUF";
    if !is_gguf {
        return Ok(None);
    }
    let len = file
        .metadata()
        .map_err(|source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    map_range(file, path, 0, len, name, false).map(Some)
}

pub(super) fn map_entry(archive: &Archive, entry: &Entry) -> Result<MappedModel, BundleError> {
    check_mappable(entry)?;
    let offset = archive.data_offset(entry)?;
    if offset % GGUF_ALIGNMENT != 0 {
        return Err(BundleError::Misaligned {
            name: entry.name.clone(),
            offset,
        });
    }
    map_range(
        archive.file(),
        archive.path(),
        offset,
        entry.size,
        entry.name.clone(),
        true,
    )
}

fn map_range(
    file: &File,
    path: &Path,
    offset: u64,
    len: u64,
    name: String,
    embedded: bool,
) -> Result<MappedModel, BundleError> {
    if len == 0 {
        return Err(BundleError::EmptyModel { name });
    }
    let Ok(len_usize) = usize::try_from(len) else {
        return Err(BundleError::TooLargeToMap { name });
    };
    // memmap2 maps from `offset` rounded down to a page and hands back the slice from
    // `offset`, so an entry in the middle of the executable maps without copying.
    // SAFETY: the mapping is read-only and nothing in this process writes the file. Another
    // process truncating or rewriting the file while we run could change or remove the bytes
    // under us; that is the accepted cost of mapping weights instead of copying them, the same
    // trade every mmap-based engine makes.
    let map = unsafe { MmapOptions::new().offset(offset).len(len_usize).map(file) }.map_err(
        |source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        },
    )?;
    // Where the file system keeps large folios (ext4 and XFS on recent Linux), this makes the
    // page cache read the weights in 2 MiB folios that map as huge pages: one TLB entry per
    // 2 MiB of a generation pass's reads. Cold-cache 2B-shaped Gemma 2 tg16 -t 1: 11.3 -> 12.6
    // t/s (1.6 GB of huge file pages instead of 0.4 GB). Purely advisory, like `WillNeed`.
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    Ok(MappedModel {
        map,
        len: len_usize,
        own: None,
        name,
        path: path.to_path_buf(),
        offset,
        embedded,
    })
}

impl MappedModel {
    /// Asks the kernel to start reading a big model in the background; purely advisory.
    fn advise_will_need(&self) {
        #[cfg(unix)]
        if self.len() >= BIG_MODEL {
            let _ = self.map.advise(memmap2::Advice::WillNeed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::testing::{bundle_bytes, fake_gguf, TempDir};

    fn archive_at(path: &Path) -> Result<Option<Archive>, BundleError> {
        Archive::read(&File::open(path).unwrap(), path)
    }

    fn no_own_archive() -> Result<Option<Archive>, BundleError> {
        Ok(None)
    }

    fn resolve_err(
        name: Option<&str>,
        own: impl FnOnce() -> Result<Option<Archive>, BundleError>,
    ) -> String {
        resolve_with(name.map(Path::new), own)
            .expect_err("resolution should fail")
            .to_string()
    }

    #[test]
    fn plain_gguf_on_disk_maps_whole() {
        let dir = TempDir::new();
        let gguf = fake_gguf(10_000);
        let path = dir.write("plain.gguf", &gguf);
        let model = resolve_with(Some(&path), no_own_archive).unwrap();
        assert_eq!(&model[..], &gguf[..]);
        assert_eq!(
            (model.name(), model.offset(), model.path()),
            ("plain.gguf", 0, path.as_path())
        );
        assert_eq!(model.to_string(), path.display().to_string());
    }

    #[test]
    fn llmfile_on_disk_gives_its_single_gguf() {
        let dir = TempDir::new();
        let gguf = fake_gguf(70_000);
        let path = dir.write(
            "other.llmfile",
            &bundle_bytes(b"engine", &[("m.gguf", &gguf), (".args", b"-n 1")]),
        );
        let model = resolve_with(Some(&path), no_own_archive).unwrap();
        assert_eq!(&model[..], &gguf[..]);
        assert_eq!(model.offset() % 65536, 0);
        assert_eq!(model.to_string(), format!("m.gguf (in {})", path.display()));
    }

    #[test]
    fn a_model_copied_into_memory_keeps_every_byte() {
        let dir = TempDir::new();
        // Over one copy chunk, and at an offset inside the bundle, so that the chunk seams
        // and the mapping's offset are both crossed.
        let gguf = fake_gguf(COPY_CHUNK + 70_001);
        let path = dir.write(
            "big.llmfile",
            &bundle_bytes(b"engine", &[("m.gguf", &gguf)]),
        );
        let mut model = resolve_with(Some(&path), no_own_archive).unwrap();
        model.place(Placement::Mapped, true).unwrap();
        assert!(!model.in_memory());
        model.place(Placement::Memory, true).unwrap();
        assert!(model.in_memory());
        assert_eq!(model.len(), gguf.len());
        assert!(model[..] == gguf[..], "the copy differs from the file");
    }

    #[test]
    fn a_privately_mapped_model_is_writable_and_its_writes_stay_in_the_process() {
        let dir = TempDir::new();
        let gguf = fake_gguf(70_001);
        let bundle = bundle_bytes(b"engine", &[("m.gguf", &gguf)]);
        let path = dir.write("private.llmfile", &bundle);
        let mut model = resolve_with(Some(&path), no_own_archive).unwrap();
        assert!(model.bytes_mut().is_none(), "a shared mapping is read-only");
        model.place(Placement::Private, true).unwrap();
        assert!(!model.in_memory());
        assert!(
            model[..] == gguf[..],
            "the private mapping differs from the file"
        );
        let bytes = model.bytes_mut().expect("a private mapping is writable");
        bytes[5] ^= 0xFF;
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        assert_eq!(model[5], gguf[5] ^ 0xFF);
        assert_eq!(model[last], gguf[last] ^ 0xFF);
        assert!(
            std::fs::read(&path).unwrap() == bundle,
            "a write reached the file"
        );
    }

    #[test]
    fn zip_on_disk_needs_exactly_one_gguf() {
        let dir = TempDir::new();
        let two = dir.write(
            "two.zip",
            &bundle_bytes(
                b"",
                &[("a.gguf", &fake_gguf(10)), ("b.GGUF", &fake_gguf(10))],
            ),
        );
        let err = resolve_err(Some(two.to_str().unwrap()), no_own_archive);
        assert_eq!(
            err,
            format!(
                "{} holds several .gguf entries (a.gguf, b.GGUF); extract the one you want",
                two.display()
            )
        );
        let none = dir.write("none.zip", &bundle_bytes(b"", &[(".args", b"-n 1")]));
        let err = resolve_err(Some(none.to_str().unwrap()), no_own_archive);
        assert_eq!(err, format!("{} holds no .gguf entry", none.display()));
        let neither = dir.write("notes.txt", b"just text");
        let err = resolve_err(Some(neither.to_str().unwrap()), no_own_archive);
        assert_eq!(
            err,
            format!(
                "{} is neither a GGUF file nor an llmfile or zip holding one",
                neither.display()
            )
        );
    }

    #[test]
    fn embedded_entries_resolve_by_name_or_alone() {
        let dir = TempDir::new();
        let gguf = fake_gguf(1000);
        let own = dir.write(
            "self",
            &bundle_bytes(b"engine", &[("gemma.gguf", &gguf), (".args", b"-n 1")]),
        );
        let by_name = resolve_with(Some(Path::new("gemma.gguf")), || archive_at(&own)).unwrap();
        assert_eq!(&by_name[..], &gguf[..]);
        let alone = resolve_with(None, || archive_at(&own)).unwrap();
        assert_eq!(alone.name(), "gemma.gguf");
        let err = resolve_err(Some("llama.gguf"), || archive_at(&own));
        assert_eq!(
            err,
            "no file or embedded model named llama.gguf (this executable carries gemma.gguf)"
        );
    }

    #[test]
    fn a_file_on_disk_wins_over_the_embedded_entry() {
        let dir = TempDir::new();
        let on_disk = fake_gguf(300);
        let path = dir.write("gemma.gguf", &on_disk);
        let own = dir.write(
            "self",
            &bundle_bytes(b"engine", &[("gemma.gguf", &fake_gguf(100))]),
        );
        let model = resolve_with(Some(&path), || archive_at(&own)).unwrap();
        assert_eq!(&model[..], &on_disk[..]);
    }

    #[test]
    fn missing_or_ambiguous_models_are_errors() {
        assert_eq!(
            resolve_err(None, no_own_archive),
            "no model given: pass -m MODEL.gguf (this executable carries no model)"
        );
        assert_eq!(
            resolve_err(Some("/nonexistent/x.gguf"), no_own_archive),
            "no file or embedded model named /nonexistent/x.gguf"
        );
        let dir = TempDir::new();
        let own = dir.write(
            "self",
            &bundle_bytes(
                b"e",
                &[("a.gguf", &fake_gguf(10)), ("b.gguf", &fake_gguf(10))],
            ),
        );
        assert_eq!(
            resolve_err(None, || archive_at(&own)),
            "this executable carries several models (a.gguf, b.gguf); choose one with -m NAME"
        );
        let args_only = dir.write("args-only", &bundle_bytes(b"e", &[(".args", b"--server")]));
        assert!(resolve_err(None, || archive_at(&args_only)).starts_with("no model given"));
    }

    #[test]
    fn compressed_misaligned_and_empty_entries_are_refused() {
        let dir = TempDir::new();
        let mut bytes = bundle_bytes(b"engine", &[("m.gguf", &fake_gguf(100))]);
        let central = bytes.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
        bytes[central + 10] = 8;
        let compressed = dir.write("compressed.llmfile", &bytes);
        assert_eq!(
            resolve_err(Some(compressed.to_str().unwrap()), no_own_archive),
            "m.gguf is stored compressed; rebuild it with llmfile pack"
        );

        let mut shifted = vec![0u8; 3];
        shifted.extend(bundle_bytes(b"", &[("m.gguf", &fake_gguf(100))]));
        let misaligned = dir.write("misaligned.zip", &shifted);
        let err = resolve_err(Some(misaligned.to_str().unwrap()), no_own_archive);
        assert!(
            err.starts_with("m.gguf starts at byte 65539 of its file, not on a 32-byte boundary"),
            "{err}"
        );

        let empty = dir.write("empty.zip", &bundle_bytes(b"", &[("m.gguf", b"")]));
        assert_eq!(
            resolve_err(Some(empty.to_str().unwrap()), no_own_archive),
            "m.gguf is empty"
        );
    }
}
