//! CUDA backend: for now, only device discovery. The driver library is loaded dynamically
//! (cudarc's `dynamic-loading`), so this compiles and runs where CUDA was never installed.
//! Kernels (`kernels/*.cu`, embedded by `build.rs`, compiled with NVRTC at run time) and their
//! launch table arrive with the CUDA issue; until then every op runs on the CPU.

/// The CUDA C sources embedded at build time, as `(file name, source)`.
pub const KERNEL_SOURCES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/cuda_sources.rs"));

/// Number of CUDA devices usable through the driver, or 0 if there is no driver library or no
/// device. Never panics.
pub fn device_count() -> usize {
    // SAFETY: `is_culib_present` only tries to dlopen the driver library and reports success.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return 0;
    }
    cudarc::driver::CudaContext::device_count().map(|n| n.max(0) as usize).unwrap_or(0)
}
