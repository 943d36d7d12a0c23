//! Embeds every `kernels/*.cu` file into the crate (for run-time compilation with NVRTC), so the
//! build needs no CUDA toolchain. Writes `$OUT_DIR/cuda_sources.rs`: a `&[(name, source)]`.

use std::{env, fs, path::Path};

fn main() {
    let dir = Path::new("kernels");
    println!("cargo:rerun-if-changed=kernels");
    let mut entries: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cu"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                let abs = fs::canonicalize(&p).expect("kernel path");
                println!("cargo:rerun-if-changed={}", p.display());
                format!("({name:?}, include_str!({:?}))", abs.display().to_string())
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    entries.sort();
    let out = Path::new(&env::var("OUT_DIR").expect("OUT_DIR")).join("cuda_sources.rs");
    fs::write(out, format!("&[{}]", entries.join(", "))).expect("write cuda_sources.rs");
}
