//! The example plugins as wasm modules, built for `wasm32-wasip1` once per test process
//! (into the workspace's target directory, as `plugins/build.sh` does).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const PACKAGES: &[&str] = &[
    "flexcore-plugin-csv",
    "flexcore-plugin-mapper",
    "flexcore-plugin-jsonl",
    "flexcore-plugin-generator",
    "flexcore-plugin-discard",
    "flexcore-plugin-misbehave",
    "flexcore-plugin-leaky",
];

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The module bytes of `package` (e.g. `flexcore-plugin-generator`).
pub fn wasm(package: &str) -> Vec<u8> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace().join("target"));
            let mut cmd = std::process::Command::new(env!("CARGO"));
            cmd.current_dir(workspace()).env("CARGO_TARGET_DIR", &target).args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip1",
            ]);
            for p in PACKAGES {
                cmd.args(["-p", p]);
            }
            let out = cmd.output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok(target.join("wasm32-wasip1/release"))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("building the wasm plugins failed (is wasm32-wasip1 installed?): {e}"));
    std::fs::read(dir.join(format!("{package}.wasm"))).unwrap_or_else(|e| panic!("{package}.wasm: {e}"))
}
