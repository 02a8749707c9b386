//! Compiles the services' `main.rs` files (included as modules by `src/main.rs`) with
//! `cfg(flexcore_multicall)`: the command service's then leaves the global allocator to
//! the multi-call binary.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(flexcore_multicall)");
    println!("cargo::rustc-cfg=flexcore_multicall");
}
