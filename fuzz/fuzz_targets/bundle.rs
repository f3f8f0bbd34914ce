//! The bundle reader on arbitrary files: the hand-written zip reader (end records, ZIP64,
//! central directory, local headers, prepended bytes), model resolution and mapping, `.args`
//! inside the zip, and `info`, which walks all of them. Errors are fine; panics are not.
//!
//! The reader works on files, so each input is written to one scratch file per process.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmfile::bundle::{info, resolve_model};
use llmfile::gguf::Gguf;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn scratch_file() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // A memory-backed directory keeps the per-input write cheap where there is one.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("llmfile-fuzz-bundle-{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_file();
    std::fs::write(path, data).expect("the scratch file is writable");
    if let Ok(model) = resolve_model(Some(path)) {
        assert!(!model.is_empty());
        assert!(model.offset() + model.len() as u64 <= data.len() as u64);
        assert_eq!(
            &data[model.offset() as usize..][..model.len()],
            &model[..],
            "the mapping shows the entry's bytes"
        );
        let _ = Gguf::parse(&model);
    }
    let _ = info(Some(path));
    let _ = std::fs::remove_file(path);
});
