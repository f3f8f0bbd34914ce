//! Where tests find the downloaded models (`scripts/fetch-models`).

use std::path::PathBuf;

/// The model's path, or None (with a note on stderr) when it has not been fetched, so tests
/// that need it skip instead of failing on a machine without the download.
pub fn path(file_name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("LLMFILE_MODELS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/llmfile/models"))
        })?;
    let path = dir.join(file_name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "skipping: {} not found (run scripts/fetch-models)",
            path.display()
        );
        None
    }
}
