//! Helpers shared by the bundle's unit tests.

use super::zip::ZipWriter;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("llmfile-bundle-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `prefix` followed by a zip of `entries`, as pack writes it.
pub fn bundle_bytes(prefix: &[u8], entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Cursor::new(prefix.to_vec());
    out.set_position(prefix.len() as u64);
    let mut zip = ZipWriter::new(out, Path::new("test"), prefix.len() as u64);
    for (name, data) in entries {
        let mut reader = *data;
        zip.add_stored(
            name,
            data.len() as u64,
            &mut reader,
            Path::new(name),
            &mut |_| {},
        )
        .unwrap();
    }
    zip.finish(prefix.len() as u64).unwrap().into_inner()
}

/// A minimal byte string that passes the GGUF magic check.
pub fn fake_gguf(len: usize) -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend((0..len.saturating_sub(4)).map(|i| (i * 7 % 251) as u8));
    bytes
}
