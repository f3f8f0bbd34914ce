//! Single-core throughput of `Kernels::dot_rows` for each weight type and each instruction set
//! the host can run, in GB/s of weights read. The weight matrix (4096 columns, at least 96 MiB)
//! is larger than the last-level cache, so the fast variants are measured against memory
//! bandwidth, as in token generation. `DOT_ROWS_KIB=512` shrinks the matrix to fit in L2,
//! which measures the kernels' arithmetic alone: a type far slower there than from memory is
//! bound by its instructions, not by bandwidth.

use kernels::{GgmlType, Isa, Kernels};
use std::hint::black_box;
use std::time::{Duration, Instant};

const COLS: usize = 4096;
const DEFAULT_KIB: usize = 96 << 10;
const TYPES: [GgmlType; 11] = [
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
/// are finite and products stay normal whatever the block layout.
fn weights(len: usize) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            0x20 | (state as u8 & 0x0F)
        })
        .collect()
}

fn main() {
    let min_bytes = std::env::var("DOT_ROWS_KIB")
        .ok()
        .and_then(|kib| kib.parse::<usize>().ok())
        .unwrap_or(DEFAULT_KIB)
        << 10;
    let only: Option<String> = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let variants: Vec<Kernels> = Isa::ALL.into_iter().filter_map(Kernels::for_isa).collect();
    let x: Vec<f32> = (0..COLS)
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
        let row_bytes = ty.row_bytes(COLS).unwrap();
        let rows = min_bytes.div_ceil(row_bytes);
        let w = weights(rows * row_bytes);
        let mut out = vec![0.0f32; rows];
        print!(
            "{:<6} {:>8.1}",
            ty.name(),
            w.len() as f64 / (1 << 20) as f64
        );
        for k in &variants {
            let mut act = vec![0u8; ty.vec_dot_type().row_bytes(COLS).unwrap()];
            k.quantize_activation(ty, &x, &mut act);
            k.dot_rows(ty, COLS, &w, &act, &mut out); // warm up
            let mut best = Duration::MAX;
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(700) {
                let t = Instant::now();
                k.dot_rows(ty, COLS, black_box(&w), black_box(&act), &mut out);
                best = best.min(t.elapsed());
            }
            black_box(&out);
            print!(" {:>14.2}", w.len() as f64 / best.as_secs_f64() / 1e9);
        }
        println!();
    }
}
