//! Single-core throughput of `Kernels::dot_rows` for each weight type and each instruction set
//! the host can run, in GB/s of weights read. The weight matrix (4096 columns, at least 96 MiB)
//! is larger than the last-level cache, so the fast variants are measured against memory
//! bandwidth, as in token generation. `DOT_ROWS_KIB=512` shrinks the matrix to fit in L2,
//! which measures the kernels' arithmetic alone: a type far slower there than from memory is
//! bound by its instructions, not by bandwidth. `DOT_ROWS_ACTS=4` takes four activation rows
//! per pass through the batched kernels, as four sequences generating together do.

use kernels::{GgmlType, Isa, Kernels};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Row length unless `DOT_ROWS_COLS` says otherwise (models' rows are often shorter: 2304 in
/// Gemma 2 2B, where each row's setup and final sum weigh more).
const COLS: usize = 4096;
const DEFAULT_KIB: usize = 96 << 10;
const TYPES: [GgmlType; 13] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::Q5_K,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q4_1,
    GgmlType::Q5_1,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];

/// Bytes whose every pair reads as a modest f16 or bf16 (high byte 0x20..0x2F), so scales
/// are finite and products stay normal whatever the block layout. They lie in transparent
/// huge pages where the kernel grants them, as `--no-mmap` weights and model files in the page
/// cache's large folios do: in 4 KiB pages one thread reads memory about a third slower here.
fn weights(len: usize) -> memmap2::MmapMut {
    let mut map = memmap2::MmapOptions::new()
        .len(len.max(1))
        .map_anon()
        .expect("anonymous mapping");
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for b in map.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = 0x20 | (state as u8 & 0x0F);
    }
    map
}

fn main() {
    let min_bytes = std::env::var("DOT_ROWS_KIB")
        .ok()
        .and_then(|kib| kib.parse::<usize>().ok())
        .unwrap_or(DEFAULT_KIB)
        << 10;
    let cols = std::env::var("DOT_ROWS_COLS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(COLS);
    let n_acts = std::env::var("DOT_ROWS_ACTS")
        .ok()
        .and_then(|a| a.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let only: Option<String> = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let variants: Vec<Kernels> = Isa::ALL.into_iter().filter_map(Kernels::for_isa).collect();
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    print!("{:<6} {:>8}", "type", "MiB");
    for k in &variants {
        print!(" {:>14}", format!("{} GB/s", k.isa()));
    }
    println!();
    for ty in TYPES {
        if only.as_deref().is_some_and(|o| o != ty.name()) {
            continue;
        }
        let Some(row_bytes) = ty.row_bytes(cols) else {
            println!(
                "{:<6} {cols} columns are not whole blocks of this type",
                ty.name()
            );
            continue;
        };
        // Whole groups of eight rows, for the grouped layout.
        let rows = min_bytes.div_ceil(row_bytes).next_multiple_of(8);
        let w = weights(rows * row_bytes);
        let w = &w[..rows * row_bytes];
        let mut out = vec![0.0f32; rows * n_acts];
        let mib = w.len() as f64 / (1 << 20) as f64;
        let mut plain = format!("{:<6} {mib:>8.1}", ty.name());
        let mut grouped = format!("{:<6} {:>8}", "", "grouped");
        let mut any_grouped = false;
        for k in &variants {
            let act_bytes = ty.vec_dot_type().row_bytes(cols).unwrap();
            let mut acts = vec![0u8; act_bytes * n_acts];
            for act in acts.chunks_exact_mut(act_bytes) {
                k.quantize_activation(ty, &x, act);
            }
            let prepared = k.prepare_rows(ty, cols, &acts[..act_bytes]);
            let speed = gigabytes_per_second(w, row_bytes, n_acts, &mut out, |w, out| {
                if n_acts == 1 {
                    k.dot_prepared_rows(ty, cols, w, &prepared, out)
                } else {
                    k.dot_rows_batch(ty, cols, w, &acts, out)
                }
            });
            plain += &format!(" {speed:>14.2}");
            let mut groups = weights(w.len());
            groups.copy_from_slice(w);
            if k.group_rows(ty, cols, &mut groups) {
                let speed = gigabytes_per_second(&groups, row_bytes, n_acts, &mut out, |w, out| {
                    if n_acts == 1 {
                        k.dot_groups(ty, cols, w, &acts, out)
                    } else {
                        k.dot_groups_batch(ty, cols, w, &acts, out)
                    }
                });
                grouped += &format!(" {speed:>14.2}");
                any_grouped = true;
            } else {
                grouped += &format!(" {:>14}", "-");
            }
        }
        println!("{plain}");
        if any_grouped {
            println!("{grouped}");
        }
    }
}

/// The best of repeated passes over `w` in generation's tasks (128 rows each, against
/// `n_acts` activations made once for all), in GB/s of weights read.
fn gigabytes_per_second(
    w: &[u8],
    row_bytes: usize,
    n_acts: usize,
    out: &mut [f32],
    mut dot: impl FnMut(&[u8], &mut [f32]),
) -> f64 {
    dot(w, out); // warm up
    let mut best = Duration::MAX;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(700) {
        let t = Instant::now();
        for (w, out) in w.chunks(128 * row_bytes).zip(out.chunks_mut(128 * n_acts)) {
            dot(black_box(w), out);
        }
        best = best.min(t.elapsed());
    }
    black_box(&out);
    w.len() as f64 / best.as_secs_f64() / 1e9
}
