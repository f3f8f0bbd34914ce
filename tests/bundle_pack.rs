//! `pack` output checked by other zip readers (Python's zipfile, Info-ZIP unzip) and by our own,
//! using a small fake engine and fake GGUF so no model download is needed.

use llmfile::bundle::{pack, resolve_model, PackOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

const ALIGNMENT: u64 = 65536;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("llmfile-pack-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fake engine whose length is deliberately not a multiple of anything, ending in zeros.
fn fake_engine() -> Vec<u8> {
    let mut bytes = b"\x7fELF not really an engine".to_vec();
    bytes.extend((0..100_003u32).map(|i| (i % 253) as u8));
    bytes.extend([0u8; 17]);
    bytes
}

fn fake_gguf() -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend((0..200_000u32).map(|i| (i * 31 % 255) as u8));
    bytes
}

struct Packed {
    dir: TempDir,
    engine: Vec<u8>,
    gguf: Vec<u8>,
    output: PathBuf,
}

const ARGS: &str = "-m model.gguf\n--temp 0 # greedy\n...\n--server\n";

fn pack_sample(args: Option<&str>) -> Packed {
    let dir = TempDir::new();
    let engine = fake_engine();
    let gguf = fake_gguf();
    let output = dir.join("out.llmfile");
    pack(&PackOptions {
        draft: None,
        model: dir.write("model.gguf", &gguf),
        output: output.clone(),
        args: args.map(str::to_string),
        engine: Some(dir.write("engine", &engine)),
        quiet: true,
    })
    .unwrap();
    Packed {
        dir,
        engine,
        gguf,
        output,
    }
}

/// Runs a tool, or returns None (with a note) when it is not installed.
fn run_tool(program: &str, args: &[&str]) -> Option<String> {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "{program} {args:?} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Some(String::from_utf8(out.stdout).unwrap())
        }
        Err(e) => {
            eprintln!("note: skipping the {program} check: {e}");
            None
        }
    }
}

#[test]
fn python_zipfile_lists_and_verifies_the_bundle() {
    let packed = pack_sample(Some(ARGS));
    let script = "import zipfile, sys, json\n\
                  z = zipfile.ZipFile(sys.argv[1])\n\
                  bad = z.testzip()\n\
                  print(json.dumps({'names': z.namelist(), 'bad': bad,\n\
                      'sizes': [i.file_size for i in z.infolist()],\n\
                      'methods': [i.compress_type for i in z.infolist()],\n\
                      'args': z.read('.args').decode()}))";
    let Some(out) = run_tool("python3", &["-c", script, packed.output.to_str().unwrap()]) else {
        return;
    };
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["names"], serde_json::json!(["model.gguf", ".args"]));
    assert_eq!(report["bad"], serde_json::Value::Null, "a CRC is wrong");
    assert_eq!(
        report["sizes"],
        serde_json::json!([packed.gguf.len(), ARGS.len()])
    );
    assert_eq!(report["methods"], serde_json::json!([0, 0]));
    assert_eq!(report["args"], ARGS);
}

#[test]
fn unzip_lists_and_tests_the_bundle() {
    let packed = pack_sample(Some(ARGS));
    let path = packed.output.to_str().unwrap();
    let Some(listing) = run_tool("unzip", &["-l", path]) else {
        return;
    };
    assert!(
        listing.contains("model.gguf") && listing.contains(".args"),
        "{listing}"
    );
    assert!(
        listing.contains(&packed.gguf.len().to_string()),
        "{listing}"
    );
    let tested = run_tool("unzip", &["-t", path]).unwrap();
    assert!(tested.contains("No errors detected"), "{tested}");
    let extracted = packed.dir.join("extracted");
    run_tool("unzip", &["-q", path, "-d", extracted.to_str().unwrap()]).unwrap();
    assert_eq!(
        std::fs::read(extracted.join("model.gguf")).unwrap(),
        packed.gguf
    );
}

#[test]
fn output_is_the_engine_then_aligned_entries() {
    let packed = pack_sample(Some(ARGS));
    let bytes = std::fs::read(&packed.output).unwrap();
    assert_eq!(&bytes[..packed.engine.len()], &packed.engine[..]);

    // Every local header's data (header + name + extra) starts on the boundary.
    let mut data_offsets = Vec::new();
    for at in 0..bytes.len() - 30 {
        if bytes[at..at + 4] == *b"PK\x03\x04" && at >= packed.engine.len() {
            let name_len = u16::from_le_bytes([bytes[at + 26], bytes[at + 27]]) as usize;
            let extra_len = u16::from_le_bytes([bytes[at + 28], bytes[at + 29]]) as usize;
            data_offsets.push((at + 30 + name_len + extra_len) as u64);
        }
    }
    assert!(data_offsets.len() >= 2, "found {data_offsets:?}");
    for offset in &data_offsets {
        assert_eq!(offset % ALIGNMENT, 0, "entry data at {offset}");
    }
    let first = data_offsets[0] as usize;
    assert_eq!(&bytes[first..first + packed.gguf.len()], &packed.gguf[..]);

    let model = resolve_model(Some(&packed.output)).unwrap();
    assert_eq!(&model[..], &packed.gguf[..]);
    assert_eq!(model.offset(), data_offsets[0]);
}

#[cfg(unix)]
#[test]
fn output_is_executable() {
    use std::os::unix::fs::PermissionsExt;
    let packed = pack_sample(None);
    let mode = std::fs::metadata(&packed.output)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn packing_is_reproducible_and_repacking_strips_the_old_zip() {
    let first = pack_sample(Some(ARGS));
    let second = pack_sample(Some(ARGS));
    let bytes = std::fs::read(&first.output).unwrap();
    assert_eq!(bytes, std::fs::read(&second.output).unwrap());

    // A bundle used as the engine contributes only its engine part, to the exact byte, even
    // though that engine ends in zero bytes just like alignment padding.
    let repacked = first.dir.join("repacked.llmfile");
    pack(&PackOptions {
        draft: None,
        model: first.dir.join("model.gguf"),
        output: repacked.clone(),
        args: Some(ARGS.to_string()),
        engine: Some(first.output.clone()),
        quiet: true,
    })
    .unwrap();
    assert_eq!(std::fs::read(&repacked).unwrap(), bytes);
}

#[test]
fn output_may_replace_its_own_engine() {
    let packed = pack_sample(None);
    let before = std::fs::read(&packed.output).unwrap();
    pack(&PackOptions {
        draft: None,
        model: packed.dir.join("model.gguf"),
        output: packed.output.clone(),
        args: None,
        engine: Some(packed.output.clone()),
        quiet: true,
    })
    .unwrap();
    assert_eq!(std::fs::read(&packed.output).unwrap(), before);
}

#[test]
fn bad_inputs_fail_before_anything_is_written() {
    let dir = TempDir::new();
    let engine = dir.write("engine", &fake_engine());
    let model = dir.write("model.gguf", &fake_gguf());
    let output = dir.join("out.llmfile");
    let attempt = |model: &Path, args: Option<&str>| {
        pack(&PackOptions {
            draft: None,
            model: model.to_path_buf(),
            output: output.clone(),
            args: args.map(str::to_string),
            engine: Some(engine.clone()),
            quiet: true,
        })
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        attempt(&model, Some("-p 'unclosed")),
        ".args: the ' quote opened on line 1 is never closed"
    );
    let not_gguf = dir.write("model.bin", b"GGML old format");
    assert_eq!(
        attempt(&not_gguf, None),
        format!(
            "{} is not a GGUF file (it does not start with \"GGUF\")",
            not_gguf.display()
        )
    );
    let missing = dir.join("missing.gguf");
    assert!(attempt(&missing, None).starts_with(&missing.display().to_string()));
    let entries: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 3, "only the inputs remain: {entries:?}");
}

/// Writes a 4.5 GiB model; run with `cargo test --test bundle_pack -- --ignored` when there
/// are 10 GB of disk to spare.
#[test]
#[ignore]
fn entries_over_4_gib_are_readable_by_python() {
    let dir = TempDir::new();
    let model = dir.join("big.gguf");
    let size = (4u64 << 30) + (512 << 20);
    let file = std::fs::File::create(&model).unwrap();
    file.set_len(size).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"GGUF"))
        .unwrap();
    let output = dir.join("big.llmfile");
    pack(&PackOptions {
        draft: None,
        model: model.clone(),
        output: output.clone(),
        args: Some("--server".to_string()),
        engine: Some(dir.write("engine", &fake_engine())),
        quiet: true,
    })
    .unwrap();
    std::fs::remove_file(&model).unwrap();
    let mapped = resolve_model(Some(&output)).unwrap();
    assert_eq!(mapped.len() as u64, size);
    assert_eq!(&mapped[..4], b"GGUF");
    let script = "import zipfile, sys\n\
                  z = zipfile.ZipFile(sys.argv[1])\n\
                  print([(i.filename, i.file_size) for i in z.infolist()], z.read('.args'))";
    if let Some(out) = run_tool("python3", &["-c", script, output.to_str().unwrap()]) {
        assert_eq!(
            out.trim(),
            format!("[('big.gguf', {size}), ('.args', 8)] b'--server'")
        );
    }
    if let Some(listing) = run_tool("unzip", &["-l", output.to_str().unwrap()]) {
        assert!(listing.contains(&format!("{size}  ")), "{listing}");
    }
}

#[test]
fn zips_from_other_writers_with_a_stub_in_front_are_read() {
    // `cat stub archive.zip`: Python writes a classic (non-ZIP64) zip whose offsets count from
    // the archive's start. The name length puts the entry's data on a 32-byte boundary so it
    // can be mapped: stub (64) + local header (30) + name (34) = 128.
    let dir = TempDir::new();
    let gguf = fake_gguf();
    let name = format!("{}.gguf", "a".repeat(29));
    let zip = dir.join("plain.zip");
    let script = "import zipfile, sys\n\
                  with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_STORED) as z:\n\
                  \x20   z.writestr(sys.argv[2], open(sys.argv[3], 'rb').read())";
    let gguf_path = dir.write("source.gguf", &gguf);
    let python_args = [
        "-c",
        script,
        zip.to_str().unwrap(),
        &name,
        gguf_path.to_str().unwrap(),
    ];
    if run_tool("python3", &python_args).is_none() {
        return;
    }
    let mut bytes = vec![0x42u8; 64];
    bytes.extend(std::fs::read(&zip).unwrap());
    let stubbed = dir.write("stubbed.llmfile", &bytes);
    let model = resolve_model(Some(&stubbed)).unwrap();
    assert_eq!(model.name(), name);
    assert_eq!(model.offset(), 128);
    assert_eq!(&model[..], &gguf[..]);
}
