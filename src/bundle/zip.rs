//! The part of PKZIP a bundle needs, read and written by hand so that we control alignment and
//! can tell "nothing appended" from "something appended but damaged".
//!
//! The writer always emits ZIP64 records (local, central and end) so that entries over 4 GiB
//! need no second code path, stores entries uncompressed so they can be mapped, and places
//! every entry's data on a 64 KiB boundary by leaving zero bytes before its local header.
//!
//! The reader trusts nothing: every offset and size is checked against the file before it is
//! used, and nothing is allocated from a count that the file has not shown to be backed by bytes.

use super::BundleError;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const LOCAL_HEADER_SIG: u32 = 0x0403_4b50;
const CENTRAL_HEADER_SIG: u32 = 0x0201_4b50;
const ZIP64_END_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const END_SIG: u32 = 0x0605_4b50;

const LOCAL_HEADER_LEN: u64 = 30;
const CENTRAL_HEADER_LEN: usize = 46;
const ZIP64_END_LEN: u64 = 56;
const ZIP64_LOCATOR_LEN: u64 = 20;
const END_LEN: u64 = 22;
const MAX_COMMENT_LEN: u64 = u16::MAX as u64;

const ZIP64_EXTRA_ID: u16 = 0x0001;
/// Local headers carry both sizes; central headers add the local header offset.
const LOCAL_ZIP64_EXTRA_LEN: u16 = 4 + 16;
const CENTRAL_ZIP64_EXTRA_LEN: u16 = 4 + 24;
/// The marker that sends readers to the ZIP64 extra field or end record.
const U32_IN_ZIP64: u32 = u32::MAX;
const U16_IN_ZIP64: u16 = u16::MAX;

pub const METHOD_STORED: u16 = 0;
const FLAG_ENCRYPTED: u16 = 1;
const FLAG_UTF8_NAME: u16 = 1 << 11;
const VERSION_ZIP64: u16 = 45;
/// "Made by" Unix, so that the external attributes below are read as a Unix mode.
const VERSION_MADE_BY: u16 = (3 << 8) | VERSION_ZIP64;
/// A regular file, rw-r--r--, in the high half as Unix zip tools expect.
const EXTERNAL_ATTRIBUTES: u32 = 0o100644 << 16;
/// 1980-01-01 00:00, the earliest DOS date: a fixed timestamp keeps packing reproducible.
const DOS_DATE: u16 = (1 << 5) | 1;
const DOS_TIME: u16 = 0;

/// Entry data starts on this boundary: a multiple of every common page size and of Windows'
/// mapping granularity, so any entry can be mapped in place.
pub const ALIGNMENT: u64 = 64 * 1024;

/// The archive comment records the engine's exact length (counted like the archive's offsets).
/// Alignment puts zero bytes between the engine and the first local header, so without it a
/// packed binary could not be cut back to exactly the engine it was made from.
const ENGINE_LEN_COMMENT: &str = "llmfile engine_len=";

/// One file in the central directory.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub method: u16,
    pub flags: u16,
    pub crc32: u32,
    pub compressed_size: u64,
    pub size: u64,
    /// Position of the local header in the file, already corrected for prepended bytes.
    pub local_header: u64,
}

impl Entry {
    pub fn is_encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTED != 0
    }

    pub fn is_dir(&self) -> bool {
        self.name.ends_with('/')
    }
}

/// A zip found at the end of a file, with its own handle on that file.
#[derive(Debug)]
pub struct Archive {
    src: Source,
    pub entries: Vec<Entry>,
    /// Bytes before the archive: the engine, in a bundle.
    pub prefix_len: u64,
    /// Where the central directory starts; entry data must end before it.
    data_end: u64,
}

/// Positioned reads of an untrusted file, with errors that name it.
#[derive(Debug)]
struct Source {
    file: File,
    path: PathBuf,
    len: u64,
}

impl Source {
    fn corrupt(&self, problem: impl Into<String>) -> BundleError {
        BundleError::Corrupt {
            path: self.path.to_path_buf(),
            problem: problem.into(),
        }
    }

    fn io(&self, source: io::Error) -> BundleError {
        BundleError::Io {
            path: self.path.to_path_buf(),
            source,
        }
    }

    /// Reads `buf.len()` bytes at `offset`; running off the end is reported as `what` truncated.
    fn read_at(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<(), BundleError> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.len) {
            return Err(self.corrupt(format!(
                "{what} is truncated (it would end past the end of the file)"
            )));
        }
        let mut file = &self.file;
        file.seek(SeekFrom::Start(offset)).map_err(|e| self.io(e))?;
        file.read_exact(buf).map_err(|e| self.io(e))
    }

    fn has_sig_at(&self, offset: u64, sig: u32) -> Result<bool, BundleError> {
        if offset.checked_add(4).is_none_or(|end| end > self.len) {
            return Ok(false);
        }
        let mut buf = [0u8; 4];
        self.read_at(offset, &mut buf, "signature")?;
        Ok(u32::from_le_bytes(buf) == sig)
    }
}

/// Little-endian field reader over a record already in memory.
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, pos: 0 }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let field = self.bytes.get(self.pos..self.pos + N)?;
        self.pos += N;
        field.try_into().ok()
    }

    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

/// Where the end of central directory record sits in the tail of a file.
enum EndSearch {
    Found(usize),
    /// A signature too close to the end to hold a whole record: the file was cut short.
    Truncated,
    Absent,
}

fn find_end_record(tail: &[u8]) -> EndSearch {
    let sig = END_SIG.to_le_bytes();
    let end_len = END_LEN as usize;
    if tail.len() >= end_len {
        // The comment length must reach exactly to the end of the file; that rules out the
        // signature's bytes turning up by chance inside an engine with nothing appended.
        for pos in (0..=tail.len() - end_len).rev() {
            if tail[pos..pos + 4] == sig {
                let comment_len = u16::from_le_bytes([tail[pos + 20], tail[pos + 21]]) as usize;
                if pos + end_len + comment_len == tail.len() {
                    return EndSearch::Found(pos);
                }
            }
        }
    }
    let last_bytes = &tail[tail.len().saturating_sub(end_len - 1)..];
    if last_bytes.windows(4).any(|w| w == sig) {
        EndSearch::Truncated
    } else {
        EndSearch::Absent
    }
}

/// The totals an end record gives, from the classic record or its ZIP64 twin.
struct Directory {
    entries: u64,
    size: u64,
    offset: u64,
    /// Where the end records begin in the file, so the directory must end at or before here.
    end_records_at: u64,
    comment: Vec<u8>,
}

impl Archive {
    /// Reads the zip at the end of `file`. `Ok(None)` means nothing is appended: a plain engine
    /// or a plain GGUF. Anything that looks like a zip but does not hold together is an error.
    pub fn read(file: &File, path: &Path) -> Result<Option<Archive>, BundleError> {
        let io_error = |source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        };
        let src = Source {
            file: file.try_clone().map_err(io_error)?,
            path: path.to_path_buf(),
            len: file.metadata().map_err(io_error)?.len(),
        };
        let Some(dir) = read_end_records(&src)? else {
            return Ok(None);
        };
        let (cd_start, shift) = locate_central_directory(&src, &dir)?;
        let entries = read_central_directory(&src, &dir, cd_start, shift)?;

        let first_header = entries
            .iter()
            .map(|e| e.local_header)
            .min()
            .unwrap_or(cd_start);
        let recorded_engine_len = std::str::from_utf8(&dir.comment)
            .ok()
            .and_then(|c| c.strip_prefix(ENGINE_LEN_COMMENT))
            .and_then(|n| n.parse::<u64>().ok())
            .and_then(|n| n.checked_add(shift))
            .filter(|&n| n <= first_header);
        Ok(Some(Archive {
            src,
            entries,
            prefix_len: recorded_engine_len.unwrap_or(first_header),
            data_end: cd_start,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.src.path
    }

    pub fn file(&self) -> &File {
        &self.src.file
    }

    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Where `entry`'s bytes start in the file, after checking its local header and that the
    /// data lies wholly before the central directory.
    pub fn data_offset(&self, entry: &Entry) -> Result<u64, BundleError> {
        let mut header = [0u8; LOCAL_HEADER_LEN as usize];
        let what = format!("local header of {}", entry.name);
        self.src.read_at(entry.local_header, &mut header, &what)?;
        if Fields::new(&header).u32() != Some(LOCAL_HEADER_SIG) {
            return Err(self.src.corrupt(format!(
                "entry {} has no local header at byte {}",
                entry.name, entry.local_header
            )));
        }
        let name_len = u16::from_le_bytes([header[26], header[27]]) as u64;
        let extra_len = u16::from_le_bytes([header[28], header[29]]) as u64;
        let data = entry.local_header + LOCAL_HEADER_LEN + name_len + extra_len;
        if data
            .checked_add(entry.compressed_size)
            .is_none_or(|end| end > self.data_end)
        {
            return Err(self.src.corrupt(format!(
                "entry {} ({} bytes at byte {data}) runs past the end of the archive data",
                entry.name, entry.compressed_size
            )));
        }
        Ok(data)
    }

    /// Reads a small stored entry whole, checking its CRC.
    pub fn read_small(&self, entry: &Entry, limit: u64) -> Result<Vec<u8>, BundleError> {
        check_mappable(entry)?;
        if entry.size > limit {
            return Err(self.src.corrupt(format!(
                "entry {} is {} bytes, more than the {limit} allowed",
                entry.name, entry.size
            )));
        }
        let offset = self.data_offset(entry)?;
        let mut bytes = vec![0u8; entry.size as usize];
        self.src.read_at(offset, &mut bytes, &entry.name)?;
        if crc32fast::hash(&bytes) != entry.crc32 {
            return Err(self
                .src
                .corrupt(format!("entry {} fails its CRC check", entry.name)));
        }
        Ok(bytes)
    }
}

/// An entry can be used in place only when its bytes in the file are the bytes it holds.
pub fn check_mappable(entry: &Entry) -> Result<(), BundleError> {
    if entry.is_encrypted() {
        return Err(BundleError::Encrypted {
            name: entry.name.clone(),
        });
    }
    if entry.method != METHOD_STORED || entry.size != entry.compressed_size {
        return Err(BundleError::Compressed {
            name: entry.name.clone(),
        });
    }
    Ok(())
}

fn read_end_records(src: &Source) -> Result<Option<Directory>, BundleError> {
    let tail_len = src.len.min(END_LEN + MAX_COMMENT_LEN);
    let tail_start = src.len - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    src.read_at(tail_start, &mut tail, "end of file")?;
    let end_pos = match find_end_record(&tail) {
        EndSearch::Found(pos) => pos,
        EndSearch::Truncated => return Err(src.corrupt("the zip end record is truncated")),
        EndSearch::Absent => return Ok(None),
    };
    let record = &tail[end_pos..];
    let mut f = Fields::new(&record[4..]);
    let fields = (|| {
        Some((
            f.u16()?,
            f.u16()?,
            f.u16()?,
            f.u16()?,
            f.u32()?,
            f.u32()?,
            f.u16()?,
        ))
    })();
    let Some((disk, cd_disk, _entries_here, entries, size, offset, comment_len)) = fields else {
        return Err(src.corrupt("the zip end record is truncated"));
    };
    let end_at = tail_start + end_pos as u64;
    let comment = record[END_LEN as usize..END_LEN as usize + comment_len as usize].to_vec();

    if let Some(dir) = read_zip64_end_records(src, end_at, comment.clone())? {
        return Ok(Some(dir));
    }
    if disk != 0 || cd_disk != 0 {
        return Err(src.corrupt("split (multi-disk) zip archives are not supported"));
    }
    Ok(Some(Directory {
        entries: entries as u64,
        size: size as u64,
        offset: offset as u64,
        end_records_at: end_at,
        comment,
    }))
}

fn read_zip64_end_records(
    src: &Source,
    end_at: u64,
    comment: Vec<u8>,
) -> Result<Option<Directory>, BundleError> {
    let Some(locator_at) = end_at.checked_sub(ZIP64_LOCATOR_LEN) else {
        return Ok(None);
    };
    let mut locator = [0u8; ZIP64_LOCATOR_LEN as usize];
    src.read_at(locator_at, &mut locator, "ZIP64 end locator")?;
    let mut f = Fields::new(&locator);
    if f.u32() != Some(ZIP64_LOCATOR_SIG) {
        return Ok(None);
    }
    let (_record_disk, stated_at, disks) = (f.u32(), f.u64(), f.u32());
    let (Some(stated_at), Some(disks)) = (stated_at, disks) else {
        return Err(src.corrupt("the ZIP64 end locator is truncated"));
    };
    if disks > 1 {
        return Err(src.corrupt("split (multi-disk) zip archives are not supported"));
    }
    // With bytes prepended and offsets left relative to the archive, the stated position is
    // short by the prefix; the record then sits right before the locator, as writers put it.
    let before_locator = locator_at.checked_sub(ZIP64_END_LEN);
    let mut record_at = None;
    for candidate in [Some(stated_at), before_locator].into_iter().flatten() {
        if candidate
            .checked_add(ZIP64_END_LEN)
            .is_some_and(|end| end <= locator_at)
            && src.has_sig_at(candidate, ZIP64_END_SIG)?
        {
            record_at = Some(candidate);
            break;
        }
    }
    let Some(record_at) = record_at else {
        return Err(src.corrupt(format!(
            "the ZIP64 end record is missing (the locator points to byte {stated_at})"
        )));
    };
    let mut record = [0u8; ZIP64_END_LEN as usize];
    src.read_at(record_at, &mut record, "ZIP64 end record")?;
    let mut f = Fields::new(&record[16..]);
    let parsed = (|| Some((f.u32()?, f.u32()?, f.u64()?, f.u64()?, f.u64()?, f.u64()?)))();
    let Some((disk, cd_disk, _entries_here, entries, size, offset)) = parsed else {
        return Err(src.corrupt("the ZIP64 end record is truncated"));
    };
    if disk != 0 || cd_disk != 0 {
        return Err(src.corrupt("split (multi-disk) zip archives are not supported"));
    }
    Ok(Some(Directory {
        entries,
        size,
        offset,
        end_records_at: record_at,
        comment,
    }))
}

/// Finds the central directory and the shift to add to every offset the archive states.
/// Writers that append a zip to an executable either rewrite the offsets to count from the
/// start of the file (shift 0) or leave them counting from the start of the archive (shift =
/// the prefix length); the directory's signature tells which, as `unzip` does.
fn locate_central_directory(src: &Source, dir: &Directory) -> Result<(u64, u64), BundleError> {
    let past_end = || {
        src.corrupt(format!(
            "the central directory ({} bytes at byte {}) points past the end of the file",
            dir.size, dir.offset
        ))
    };
    let actual_start = dir
        .end_records_at
        .checked_sub(dir.size)
        .ok_or_else(past_end)?;
    let shift = actual_start.checked_sub(dir.offset).ok_or_else(past_end)?;
    if dir.entries == 0 {
        return Ok((actual_start, shift));
    }
    if src.has_sig_at(actual_start, CENTRAL_HEADER_SIG)? {
        return Ok((actual_start, shift));
    }
    if src.has_sig_at(dir.offset, CENTRAL_HEADER_SIG)? {
        return Ok((dir.offset, 0));
    }
    Err(src.corrupt(format!("no central directory at byte {}", dir.offset)))
}

fn read_central_directory(
    src: &Source,
    dir: &Directory,
    cd_start: u64,
    shift: u64,
) -> Result<Vec<Entry>, BundleError> {
    let mut file = &src.file;
    file.seek(SeekFrom::Start(cd_start))
        .map_err(|e| src.io(e))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file.take(dir.size));
    // Every entry is backed by at least a fixed header in the file, so pushing one by one keeps
    // memory proportional to real bytes whatever count the end record claims.
    let mut entries = Vec::new();
    for index in 0..dir.entries {
        let truncated = || src.corrupt(format!("central directory entry {index} is truncated"));
        let mut header = [0u8; CENTRAL_HEADER_LEN];
        reader.read_exact(&mut header).map_err(|_| truncated())?;
        let mut f = Fields::new(&header);
        if f.u32() != Some(CENTRAL_HEADER_SIG) {
            return Err(src.corrupt(format!(
                "central directory entry {index} is damaged (bad signature)"
            )));
        }
        let fixed = (|| {
            let _made_by = f.u16()?;
            let _needed = f.u16()?;
            let flags = f.u16()?;
            let method = f.u16()?;
            let _time = f.u16()?;
            let _date = f.u16()?;
            let crc32 = f.u32()?;
            let compressed_size = f.u32()?;
            let size = f.u32()?;
            let name_len = f.u16()?;
            let extra_len = f.u16()?;
            let comment_len = f.u16()?;
            let _disk = f.u16()?;
            let _internal = f.u16()?;
            let _external = f.u32()?;
            let local_header = f.u32()?;
            Some((
                flags,
                method,
                crc32,
                compressed_size,
                size,
                name_len,
                extra_len,
                comment_len,
                local_header,
            ))
        })();
        let Some((
            flags,
            method,
            crc32,
            compressed_size,
            size,
            name_len,
            extra_len,
            comment_len,
            local_header,
        )) = fixed
        else {
            return Err(truncated());
        };
        let mut name = vec![0u8; name_len as usize];
        let mut extra = vec![0u8; extra_len as usize];
        let mut comment = vec![0u8; comment_len as usize];
        reader.read_exact(&mut name).map_err(|_| truncated())?;
        reader.read_exact(&mut extra).map_err(|_| truncated())?;
        reader.read_exact(&mut comment).map_err(|_| truncated())?;
        let name = String::from_utf8(name)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());

        let mut size = size as u64;
        let mut compressed_size = compressed_size as u64;
        let mut local_header = local_header as u64;
        apply_zip64_extra(&extra, &mut size, &mut compressed_size, &mut local_header).ok_or_else(
            || {
                src.corrupt(format!(
                    "the ZIP64 extra field of entry {name} is too short"
                ))
            },
        )?;
        let local_header = local_header
            .checked_add(shift)
            .filter(|&at| at.checked_add(LOCAL_HEADER_LEN).is_some_and(|end| end <= cd_start))
            .ok_or_else(|| {
                src.corrupt(format!(
                    "entry {name} points past the end of the archive data (local header at byte {local_header})"
                ))
            })?;
        entries.push(Entry {
            name,
            method,
            flags,
            crc32,
            compressed_size,
            size,
            local_header,
        });
    }
    Ok(entries)
}

/// Replaces each 32-bit field holding the ZIP64 marker by its 64-bit value from the extra
/// field, in the order the format fixes. `None` when a needed value is missing.
fn apply_zip64_extra(
    extra: &[u8],
    size: &mut u64,
    compressed_size: &mut u64,
    local_header: &mut u64,
) -> Option<()> {
    let marked = |v: u64| v == U32_IN_ZIP64 as u64;
    if !marked(*size) && !marked(*compressed_size) && !marked(*local_header) {
        return Some(());
    }
    let mut f = Fields::new(extra);
    while let (Some(id), Some(len)) = (f.u16(), f.u16()) {
        let body = extra.get(f.pos..f.pos + len as usize)?;
        f.pos += len as usize;
        if id != ZIP64_EXTRA_ID {
            continue;
        }
        let mut values = Fields::new(body);
        for field in [size, compressed_size, local_header] {
            if marked(*field) {
                *field = values.u64()?;
            }
        }
        return Some(());
    }
    // No ZIP64 field: the marker is a genuine value (a file of exactly 4 GiB - 1 bytes).
    Some(())
}

/// Writes a zip after bytes already in `out`, one stored, aligned entry at a time.
pub struct ZipWriter<W: Write + Seek> {
    out: W,
    path: PathBuf,
    pos: u64,
    entries: Vec<Entry>,
}

impl<W: Write + Seek> ZipWriter<W> {
    /// `pos` is how many bytes `out` already holds (the engine); `path` names it in errors.
    pub fn new(out: W, path: &Path, pos: u64) -> Self {
        ZipWriter {
            out,
            path: path.to_path_buf(),
            pos,
            entries: Vec::new(),
        }
    }

    fn io(&self, source: io::Error) -> BundleError {
        BundleError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), BundleError> {
        self.out.write_all(bytes).map_err(|e| self.io(e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Stores `size` bytes read from `data` (named `source` in errors) as entry `name`, its
    /// data on an `ALIGNMENT` boundary. `progress` hears of each chunk copied.
    pub fn add_stored(
        &mut self,
        name: &str,
        size: u64,
        data: &mut dyn Read,
        source: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), BundleError> {
        let name_len = u16::try_from(name.len()).map_err(|_| BundleError::NameTooLong {
            name: name.to_string(),
        })?;
        let header_len = LOCAL_HEADER_LEN + name.len() as u64 + LOCAL_ZIP64_EXTRA_LEN as u64;
        let data_at = (self.pos + header_len).next_multiple_of(ALIGNMENT);
        let header_at = data_at - header_len;
        let padding = vec![0u8; (header_at - self.pos) as usize];
        self.write(&padding)?;

        let flags = if name.is_ascii() { 0 } else { FLAG_UTF8_NAME };
        let mut header = Vec::with_capacity(header_len as usize);
        put_u32(&mut header, LOCAL_HEADER_SIG);
        put_u16(&mut header, VERSION_ZIP64);
        put_u16(&mut header, flags);
        put_u16(&mut header, METHOD_STORED);
        put_u16(&mut header, DOS_TIME);
        put_u16(&mut header, DOS_DATE);
        let crc_at = header_at + header.len() as u64;
        put_u32(&mut header, 0); // CRC, patched once the data has streamed through
        put_u32(&mut header, U32_IN_ZIP64);
        put_u32(&mut header, U32_IN_ZIP64);
        put_u16(&mut header, name_len);
        put_u16(&mut header, LOCAL_ZIP64_EXTRA_LEN);
        header.extend_from_slice(name.as_bytes());
        put_u16(&mut header, ZIP64_EXTRA_ID);
        put_u16(&mut header, LOCAL_ZIP64_EXTRA_LEN - 4);
        put_u64(&mut header, size);
        put_u64(&mut header, size);
        self.write(&header)?;

        let crc32 = copy_exact(data, source, &mut self.out, &self.path, size, progress)?;
        self.pos += size;
        self.out
            .seek(SeekFrom::Start(crc_at))
            .and_then(|_| self.out.write_all(&crc32.to_le_bytes()))
            .and_then(|_| self.out.seek(SeekFrom::Start(self.pos)))
            .map_err(|e| self.io(e))?;

        self.entries.push(Entry {
            name: name.to_string(),
            method: METHOD_STORED,
            flags,
            crc32,
            compressed_size: size,
            size,
            local_header: header_at,
        });
        Ok(())
    }

    /// Writes the central directory and the end records, with offsets counted from the start
    /// of the file, and returns the output.
    pub fn finish(mut self, engine_len: u64) -> Result<W, BundleError> {
        let cd_start = self.pos;
        let mut cd = Vec::new();
        for entry in &self.entries {
            put_u32(&mut cd, CENTRAL_HEADER_SIG);
            put_u16(&mut cd, VERSION_MADE_BY);
            put_u16(&mut cd, VERSION_ZIP64);
            put_u16(&mut cd, entry.flags);
            put_u16(&mut cd, entry.method);
            put_u16(&mut cd, DOS_TIME);
            put_u16(&mut cd, DOS_DATE);
            put_u32(&mut cd, entry.crc32);
            put_u32(&mut cd, U32_IN_ZIP64);
            put_u32(&mut cd, U32_IN_ZIP64);
            put_u16(&mut cd, entry.name.len() as u16);
            put_u16(&mut cd, CENTRAL_ZIP64_EXTRA_LEN);
            put_u16(&mut cd, 0); // comment length
            put_u16(&mut cd, 0); // disk
            put_u16(&mut cd, 0); // internal attributes
            put_u32(&mut cd, EXTERNAL_ATTRIBUTES);
            put_u32(&mut cd, U32_IN_ZIP64);
            cd.extend_from_slice(entry.name.as_bytes());
            put_u16(&mut cd, ZIP64_EXTRA_ID);
            put_u16(&mut cd, CENTRAL_ZIP64_EXTRA_LEN - 4);
            put_u64(&mut cd, entry.size);
            put_u64(&mut cd, entry.compressed_size);
            put_u64(&mut cd, entry.local_header);
        }
        let cd_size = cd.len() as u64;
        let zip64_end_at = cd_start + cd_size;
        let count = self.entries.len() as u64;
        let comment = format!("{ENGINE_LEN_COMMENT}{engine_len}");

        let mut end = cd;
        put_u32(&mut end, ZIP64_END_SIG);
        put_u64(&mut end, ZIP64_END_LEN - 12); // size of the rest of this record
        put_u16(&mut end, VERSION_MADE_BY);
        put_u16(&mut end, VERSION_ZIP64);
        put_u32(&mut end, 0); // this disk
        put_u32(&mut end, 0); // disk holding the central directory
        put_u64(&mut end, count);
        put_u64(&mut end, count);
        put_u64(&mut end, cd_size);
        put_u64(&mut end, cd_start);

        put_u32(&mut end, ZIP64_LOCATOR_SIG);
        put_u32(&mut end, 0); // disk holding the ZIP64 end record
        put_u64(&mut end, zip64_end_at);
        put_u32(&mut end, 1); // total disks

        put_u32(&mut end, END_SIG);
        put_u16(&mut end, 0); // this disk
        put_u16(&mut end, 0); // disk holding the central directory
        put_u16(&mut end, U16_IN_ZIP64);
        put_u16(&mut end, U16_IN_ZIP64);
        put_u32(&mut end, U32_IN_ZIP64);
        put_u32(&mut end, U32_IN_ZIP64);
        put_u16(&mut end, comment.len() as u16);
        end.extend_from_slice(comment.as_bytes());
        self.write(&end)?;
        Ok(self.out)
    }
}

/// Copies exactly `len` bytes from `input` to `output`, returning their CRC-32. An input that
/// ends early changed under us (or lied about its size) and is an error, not a short entry.
pub fn copy_exact(
    input: &mut dyn Read,
    input_path: &Path,
    output: &mut dyn Write,
    output_path: &Path,
    len: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<u32, BundleError> {
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let got = match input.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(BundleError::Corrupt {
                    path: input_path.to_path_buf(),
                    problem: format!(
                        "file ended after {} of {len} bytes; did it change while packing?",
                        len - left
                    ),
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(BundleError::Io {
                    path: input_path.to_path_buf(),
                    source,
                })
            }
        };
        crc.update(&buf[..got]);
        output
            .write_all(&buf[..got])
            .map_err(|source| BundleError::Io {
                path: output_path.to_path_buf(),
                source,
            })?;
        left -= got as u64;
        progress(got as u64);
    }
    Ok(crc.finalize())
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::testing::{bundle_bytes, fake_gguf, TempDir};

    const ARGS: &[u8] = b"-p hello --temp 0";

    fn sample() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        // The engine ends in zeros, as alignment padding does, to show its length is exact.
        let mut engine = b"\x7fELF fake engine".to_vec();
        engine.extend([0u8; 100]);
        let model = fake_gguf(5000);
        let bytes = bundle_bytes(&engine, &[("model.gguf", &model), (".args", ARGS)]);
        (engine, model, bytes)
    }

    fn read(dir: &TempDir, bytes: &[u8]) -> Result<Option<Archive>, BundleError> {
        let path = dir.write("bundle", bytes);
        Archive::read(&File::open(&path).unwrap(), &path)
    }

    fn rfind(bytes: &[u8], sig: u32) -> usize {
        let sig = sig.to_le_bytes();
        bytes.windows(4).rposition(|w| w == sig).unwrap()
    }

    fn patch_u64(bytes: &mut [u8], at: usize, value: u64) {
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    fn error_of(result: Result<Option<Archive>, BundleError>) -> String {
        result
            .expect_err("damaged archive was accepted")
            .to_string()
    }

    #[test]
    fn round_trip_keeps_names_sizes_crcs_and_alignment() {
        let dir = TempDir::new();
        let (engine, model, bytes) = sample();
        let archive = read(&dir, &bytes).unwrap().unwrap();
        assert_eq!(archive.prefix_len, engine.len() as u64);
        let names: Vec<_> = archive.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["model.gguf", ".args"]);
        for (entry, data) in archive.entries.iter().zip([&model[..], ARGS]) {
            assert_eq!(entry.size, data.len() as u64);
            assert_eq!(entry.crc32, crc32fast::hash(data));
            let at = archive.data_offset(entry).unwrap();
            assert_eq!(at % ALIGNMENT, 0, "{} data at {at}", entry.name);
            assert_eq!(&bytes[at as usize..at as usize + data.len()], data);
        }
        assert_eq!(
            archive
                .read_small(archive.find(".args").unwrap(), 1024)
                .unwrap(),
            ARGS
        );
    }

    #[test]
    fn every_record_is_zip64() {
        let (_, model, bytes) = sample();
        let end = rfind(&bytes, END_SIG);
        let mut f = Fields::new(&bytes[end + 8..]);
        assert_eq!(
            (f.u16(), f.u32(), f.u32()),
            (Some(U16_IN_ZIP64), Some(U32_IN_ZIP64), Some(U32_IN_ZIP64))
        );
        let locator = rfind(&bytes, ZIP64_LOCATOR_SIG);
        assert_eq!(locator + ZIP64_LOCATOR_LEN as usize, end);
        let zip64_end = rfind(&bytes, ZIP64_END_SIG);
        assert_eq!(zip64_end + ZIP64_END_LEN as usize, locator);

        let central = bytes
            .windows(4)
            .position(|w| w == CENTRAL_HEADER_SIG.to_le_bytes())
            .unwrap();
        let extra = central + CENTRAL_HEADER_LEN + "model.gguf".len();
        let mut f = Fields::new(&bytes[extra..]);
        assert_eq!(f.u16(), Some(ZIP64_EXTRA_ID));
        assert_eq!(f.u16(), Some(24));
        assert_eq!(f.u64(), Some(model.len() as u64));

        let local = bytes
            .windows(4)
            .position(|w| w == LOCAL_HEADER_SIG.to_le_bytes())
            .unwrap();
        let mut f = Fields::new(&bytes[local + 18..]);
        assert_eq!((f.u32(), f.u32()), (Some(U32_IN_ZIP64), Some(U32_IN_ZIP64)));
        let extra = local + LOCAL_HEADER_LEN as usize + "model.gguf".len();
        let mut f = Fields::new(&bytes[extra..]);
        assert_eq!(
            (f.u16(), f.u16(), f.u64()),
            (Some(ZIP64_EXTRA_ID), Some(16), Some(model.len() as u64))
        );
    }

    #[test]
    fn files_with_nothing_appended_are_not_archives() {
        let dir = TempDir::new();
        assert!(read(&dir, b"").unwrap().is_none());
        assert!(read(&dir, b"\x7fELF tiny").unwrap().is_none());
        // The end signature inside an engine (our own reader holds it as a constant) does not
        // count unless its comment length reaches exactly to the end of the file.
        let mut engine = vec![0xAAu8; 4000];
        engine[3000..3004].copy_from_slice(&END_SIG.to_le_bytes());
        assert!(read(&dir, &engine).unwrap().is_none());
    }

    #[test]
    fn truncated_end_record_is_an_error() {
        let dir = TempDir::new();
        let (_, _, bytes) = sample();
        let comment_len = format!("{ENGINE_LEN_COMMENT}116").len();
        let cut = &bytes[..bytes.len() - comment_len - 10];
        assert_eq!(
            error_of(read(&dir, cut)),
            format!(
                "{}: the zip end record is truncated",
                dir.path().join("bundle").display()
            )
        );
    }

    #[test]
    fn central_directory_past_the_end_is_an_error() {
        let dir = TempDir::new();
        let (_, _, bytes) = sample();
        let zip64_end = rfind(&bytes, ZIP64_END_SIG);
        let mut bad_offset = bytes.clone();
        patch_u64(&mut bad_offset, zip64_end + 48, bytes.len() as u64 + 1000);
        assert!(
            error_of(read(&dir, &bad_offset)).contains("the central directory")
                && error_of(read(&dir, &bad_offset)).ends_with("points past the end of the file")
        );
        let mut bad_size = bytes.clone();
        patch_u64(&mut bad_size, zip64_end + 40, u64::MAX - 5);
        assert!(error_of(read(&dir, &bad_size)).ends_with("points past the end of the file"));
    }

    #[test]
    fn entry_overrunning_the_file_is_an_error() {
        let dir = TempDir::new();
        let (_, _, mut bytes) = sample();
        let central = bytes
            .windows(4)
            .position(|w| w == CENTRAL_HEADER_SIG.to_le_bytes())
            .unwrap();
        let extra = central + CENTRAL_HEADER_LEN + "model.gguf".len();
        patch_u64(&mut bytes, extra + 4, 5 << 30);
        patch_u64(&mut bytes, extra + 12, 5 << 30);
        let archive = read(&dir, &bytes).unwrap().unwrap();
        let entry = archive.find("model.gguf").unwrap();
        assert_eq!(
            entry.size,
            5 << 30,
            "64-bit sizes come from the ZIP64 extra field"
        );
        let err = archive.data_offset(entry).unwrap_err().to_string();
        assert!(err.ends_with("entry model.gguf (5368709120 bytes at byte 65536) runs past the end of the archive data"), "{err}");
    }

    #[test]
    fn local_header_past_the_directory_is_an_error() {
        let dir = TempDir::new();
        let (_, _, mut bytes) = sample();
        let central = bytes
            .windows(4)
            .position(|w| w == CENTRAL_HEADER_SIG.to_le_bytes())
            .unwrap();
        let extra = central + CENTRAL_HEADER_LEN + "model.gguf".len();
        patch_u64(&mut bytes, extra + 20, u64::MAX - 1);
        assert!(error_of(read(&dir, &bytes))
            .contains("entry model.gguf points past the end of the archive data"));
    }

    #[test]
    fn damaged_directory_is_an_error() {
        let dir = TempDir::new();
        let (_, _, bytes) = sample();
        let central = bytes
            .windows(4)
            .position(|w| w == CENTRAL_HEADER_SIG.to_le_bytes())
            .unwrap();
        let mut bad_sig = bytes.clone();
        bad_sig[central] = b'X';
        assert!(error_of(read(&dir, &bad_sig))
            .ends_with(&format!("no central directory at byte {central}")));

        // A count the directory cannot back fails on the missing bytes, without allocating.
        let mut bad_count = bytes.clone();
        patch_u64(&mut bad_count, rfind(&bytes, ZIP64_END_SIG) + 32, u64::MAX);
        assert!(
            error_of(read(&dir, &bad_count)).ends_with("central directory entry 2 is truncated")
        );

        let mut missing_zip64_end = bytes.clone();
        let zip64_end = rfind(&bytes, ZIP64_END_SIG);
        missing_zip64_end[zip64_end] = b'X';
        assert!(
            error_of(read(&dir, &missing_zip64_end)).contains("the ZIP64 end record is missing")
        );
    }

    #[test]
    fn local_header_must_be_where_the_directory_says() {
        let dir = TempDir::new();
        let (_, _, mut bytes) = sample();
        let local = bytes
            .windows(4)
            .position(|w| w == LOCAL_HEADER_SIG.to_le_bytes())
            .unwrap();
        bytes[local] = b'X';
        let archive = read(&dir, &bytes).unwrap().unwrap();
        let err = archive
            .data_offset(&archive.entries[0])
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(&format!(
                "entry model.gguf has no local header at byte {local}"
            )),
            "{err}"
        );
    }

    #[test]
    fn compressed_and_encrypted_entries_cannot_be_mapped() {
        let dir = TempDir::new();
        let (_, _, mut bytes) = sample();
        let central = bytes
            .windows(4)
            .position(|w| w == CENTRAL_HEADER_SIG.to_le_bytes())
            .unwrap();
        bytes[central + 10] = 8; // deflate
        let archive = read(&dir, &bytes).unwrap().unwrap();
        let err = check_mappable(&archive.entries[0]).unwrap_err().to_string();
        assert_eq!(
            err,
            "model.gguf is stored compressed; rebuild it with llmfile pack"
        );

        bytes[central + 10] = 0;
        bytes[central + 8] |= FLAG_ENCRYPTED as u8;
        let archive = read(&dir, &bytes).unwrap().unwrap();
        let err = check_mappable(&archive.entries[0]).unwrap_err().to_string();
        assert!(err.starts_with("model.gguf is encrypted"), "{err}");
    }

    #[test]
    fn small_entries_are_crc_checked() {
        let dir = TempDir::new();
        let (_, _, mut bytes) = sample();
        let at = bytes.windows(ARGS.len()).position(|w| w == ARGS).unwrap();
        bytes[at] ^= 1;
        let archive = read(&dir, &bytes).unwrap().unwrap();
        let err = archive
            .read_small(archive.find(".args").unwrap(), 1024)
            .unwrap_err();
        assert!(
            err.to_string().ends_with("entry .args fails its CRC check"),
            "{err}"
        );
        let err = archive
            .read_small(archive.find(".args").unwrap(), 4)
            .unwrap_err();
        assert!(err.to_string().contains("more than the 4 allowed"), "{err}");
    }

    #[test]
    fn offsets_relative_to_the_archive_are_corrected() {
        // `cat stub archive.zip` leaves every offset counting from the archive's start.
        let dir = TempDir::new();
        let model = fake_gguf(3000);
        let archive_only = bundle_bytes(b"", &[("m.gguf", &model)]);
        for prefix_len in [65536usize, 12345] {
            let mut bytes = vec![0x5Au8; prefix_len];
            bytes.extend(&archive_only);
            let archive = read(&dir, &bytes).unwrap().unwrap();
            assert_eq!(archive.prefix_len, prefix_len as u64);
            let at = archive.data_offset(&archive.entries[0]).unwrap() as usize;
            assert_eq!(at, prefix_len + 65536);
            assert_eq!(&bytes[at..at + model.len()], &model[..]);
        }
    }

    #[test]
    fn offsets_beyond_4_gib_round_trip() {
        // A sparse file puts the zip past 4 GiB without writing gigabytes.
        let dir = TempDir::new();
        let path = dir.path().join("big");
        let file = File::create(&path).unwrap();
        let engine_len = (4u64 << 30) + 12345;
        file.set_len(engine_len).unwrap();
        let mut out = &file;
        out.seek(SeekFrom::Start(engine_len)).unwrap();
        let mut zip = ZipWriter::new(out, &path, engine_len);
        zip.add_stored(
            "far.gguf",
            ARGS.len() as u64,
            &mut &ARGS[..],
            Path::new("far.gguf"),
            &mut |_| {},
        )
        .unwrap();
        zip.finish(engine_len).unwrap();

        let archive = Archive::read(&File::open(&path).unwrap(), &path)
            .unwrap()
            .unwrap();
        assert_eq!(archive.prefix_len, engine_len);
        let entry = &archive.entries[0];
        assert!(entry.local_header > u32::MAX as u64);
        assert_eq!(archive.data_offset(entry).unwrap() % ALIGNMENT, 0);
        assert_eq!(archive.read_small(entry, 1024).unwrap(), ARGS);
    }

    #[test]
    fn end_record_search_prefers_a_whole_record() {
        let mut tail = vec![0u8; 10];
        tail.extend(END_SIG.to_le_bytes());
        tail.extend([0u8; 16]);
        tail.extend(4u16.to_le_bytes());
        // The comment itself ends with signature bytes, which must not read as truncation.
        tail.extend(END_SIG.to_le_bytes());
        assert!(matches!(find_end_record(&tail), EndSearch::Found(10)));
        // Cut inside the fixed fields: truncated. Cut inside the comment: the length no longer
        // reaches the end, which is what any engine's stray signature bytes look like.
        assert!(matches!(find_end_record(&tail[..25]), EndSearch::Truncated));
        assert!(matches!(
            find_end_record(&tail[..tail.len() - 1]),
            EndSearch::Absent
        ));
        assert!(matches!(find_end_record(b"PK"), EndSearch::Absent));
    }

    #[test]
    fn damaged_bytes_never_panic() {
        let dir = TempDir::new();
        let (_, _, bytes) = sample();
        // Every byte that is structure rather than entry data: local headers and the tail.
        let sig = LOCAL_HEADER_SIG.to_le_bytes();
        let mut structure: Vec<usize> = (0..bytes.len() - 4)
            .filter(|&i| bytes[i..i + 4] == sig)
            .flat_map(|i| i..i + 50)
            .collect();
        structure.extend(rfind(&bytes, CENTRAL_HEADER_SIG) - 200..bytes.len());
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let mut damaged = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let at = structure[next() as usize % structure.len()];
                damaged[at] = next() as u8;
            }
            if let Ok(Some(archive)) = read(&dir, &damaged) {
                for entry in &archive.entries {
                    let _ = archive.data_offset(entry);
                    let _ = archive.read_small(entry, 1 << 20);
                }
            }
        }
    }
}
