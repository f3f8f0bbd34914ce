//! `llmfile info [FILE]`: what a bundle (or a bare GGUF) holds, without running it.

use super::args::ARGS_ENTRY;
use super::model::{map_entry, open_gguf_file, MappedModel};
use super::progress::human_bytes;
use super::zip::{Archive, METHOD_STORED};
use super::{embedded_args_text, gguf_entries, open, own_executable, BundleError};
use crate::gguf::Gguf;
use std::collections::BTreeMap;
use std::path::Path;

/// A report on `path` (the running executable when `None`): the zip entries with their sizes
/// and offsets, then for each GGUF its name, architecture, parameter count, tensor types and
/// context length, then the `.args` text.
pub fn info(path: Option<&Path>) -> Result<String, BundleError> {
    let path = match path {
        Some(path) => path.to_path_buf(),
        None => own_executable().ok_or(BundleError::OwnExecutableNotFound)?,
    };
    let file = open(&path)?;
    let mut lines = Vec::new();
    if let Some(model) = open_gguf_file(&file, &path)? {
        lines.push(format!(
            "{}: GGUF file, {}",
            path.display(),
            human_bytes(model.len() as u64)
        ));
        describe_model(&model, &mut lines)?;
        return Ok(lines.join("\n") + "\n");
    }
    let Some(archive) = Archive::read(&file, &path)? else {
        lines.push(format!(
            "{}: nothing appended (a plain engine, or not an llmfile); give it a model with -m MODEL.gguf",
            path.display()
        ));
        return Ok(lines.join("\n") + "\n");
    };

    lines.push(format!(
        "{}: engine of {}, then {} zip entries",
        path.display(),
        human_bytes(archive.prefix_len),
        archive.entries.len()
    ));
    let name_width = archive
        .entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(0);
    for entry in &archive.entries {
        let method = match entry.method {
            METHOD_STORED => "stored".to_string(),
            8 => "deflated".to_string(),
            other => format!("method {other}"),
        };
        lines.push(format!(
            "  {:<name_width$}  {:>10}  {method:<8}  data at byte {}",
            entry.name,
            human_bytes(entry.size),
            archive.data_offset(entry)?
        ));
    }
    for entry in gguf_entries(&archive) {
        lines.push(format!("model {}:", entry.name));
        describe_model(&map_entry(&archive, entry)?, &mut lines)?;
    }
    if let Some(text) = embedded_args_text(&archive)? {
        lines.push(format!("{ARGS_ENTRY}:"));
        lines.extend(text.lines().map(|line| format!("  {line}")));
    }
    Ok(lines.join("\n") + "\n")
}

fn describe_model(model: &MappedModel, lines: &mut Vec<String>) -> Result<(), BundleError> {
    let gguf_error = |source| BundleError::Gguf {
        name: model.name().to_string(),
        source,
    };
    let gguf = Gguf::parse(model).map_err(gguf_error)?;
    let architecture = gguf.architecture().map_err(gguf_error)?;
    let name = gguf.get_str_opt("general.name").map_err(gguf_error)?;
    let context = gguf
        .get_u32_opt(&format!("{architecture}.context_length"))
        .map_err(gguf_error)?;

    let parameters: u64 = gguf.tensors().iter().map(|t| t.n_elements()).sum();
    let mut types = BTreeMap::new();
    for tensor in gguf.tensors() {
        *types.entry(tensor.ty.name()).or_insert(0usize) += 1;
    }
    let mut types: Vec<_> = types.into_iter().collect();
    types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let types: Vec<_> = types.iter().map(|(ty, n)| format!("{ty} x{n}")).collect();

    lines.push(format!("  name: {}", name.unwrap_or("(none)")));
    lines.push(format!("  architecture: {architecture}"));
    lines.push(format!(
        "  parameters: {} ({parameters})",
        short_count(parameters)
    ));
    lines.push(format!("  tensor types: {}", types.join(", ")));
    lines.push(format!(
        "  context length: {}",
        context.map_or("(not given)".to_string(), |c| c.to_string())
    ));
    Ok(())
}

/// 268098176 -> "268.1M", the way model sizes are usually quoted.
fn short_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::testing::{bundle_bytes, TempDir};

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf"
    );

    fn fixture() -> Vec<u8> {
        std::fs::read(FIXTURE).expect("the synthetic Gemma 2 fixture is committed")
    }

    #[test]
    fn bundle_report_lists_entries_model_and_args() {
        let dir = TempDir::new();
        let args = "-m gemma2-synthetic-q4_k_m.gguf\n--temp 0\n";
        let bytes = bundle_bytes(
            b"engine bytes",
            &[
                ("gemma2-synthetic-q4_k_m.gguf", &fixture()),
                (".args", args.as_bytes()),
            ],
        );
        let path = dir.write("demo.llmfile", &bytes);
        let report = info(Some(&path)).unwrap();
        let lines: Vec<_> = report.lines().collect();
        assert_eq!(
            lines[0],
            format!("{}: engine of 12 B, then 2 zip entries", path.display())
        );
        assert!(
            lines[1].starts_with("  gemma2-synthetic-q4_k_m.gguf  "),
            "{report}"
        );
        assert!(
            lines[1].ends_with("stored    data at byte 65536"),
            "{report}"
        );
        assert!(lines[2].starts_with("  .args  "), "{report}");
        assert_eq!(lines[3], "model gemma2-synthetic-q4_k_m.gguf:");
        assert!(lines.contains(&"  architecture: gemma2"), "{report}");
        assert!(
            lines.iter().any(|l| l.starts_with("  parameters: ")),
            "{report}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("  tensor types: ") && l.contains("q4_K x")),
            "{report}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("  context length: ")),
            "{report}"
        );
        assert_eq!(
            lines[lines.len() - 3..],
            [".args:", "  -m gemma2-synthetic-q4_k_m.gguf", "  --temp 0"]
        );
    }

    #[test]
    fn parameter_count_is_the_sum_of_tensor_elements() {
        let bytes = fixture();
        let gguf = Gguf::parse(&bytes).unwrap();
        let expected: u64 = gguf.tensors().iter().map(|t| t.n_elements()).sum();
        let report = info(Some(Path::new(FIXTURE))).unwrap();
        assert!(
            report.starts_with(&format!("{FIXTURE}: GGUF file, ")),
            "{report}"
        );
        assert!(report.contains(&format!("({expected})\n")), "{report}");
    }

    #[test]
    fn plain_files_and_broken_models_are_reported() {
        let dir = TempDir::new();
        let plain = dir.write("engine", b"\x7fELF nothing appended");
        assert!(info(Some(&plain)).unwrap().contains("nothing appended"));
        let bad = dir.write(
            "bad.llmfile",
            &bundle_bytes(b"e", &[("m.gguf", b"GGUF\x03\x00")]),
        );
        let err = info(Some(&bad)).unwrap_err().to_string();
        assert!(err.starts_with("m.gguf: "), "{err}");
    }

    #[test]
    fn counts_read_like_model_sizes() {
        assert_eq!(short_count(268_098_176), "268.1M");
        assert_eq!(short_count(9_241_705_984), "9.24B");
        assert_eq!(short_count(512), "512");
    }
}
