//! Per-user bandwidth caps in the kernel (placeholder for the module
//! docs; see the submodules).

pub mod rate;
