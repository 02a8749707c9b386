//! The suite's own hostile modules: WAT texts, and generators for the ones whose size is
//! the point (a compile bomb, an oversized STATE, a SCHEMA flood).

use std::fmt::Write as _;

/// `_start` spins forever in its start section instead.
pub const START_SPIN: &str = r#"
(module
  (memory (export "memory") 1)
  (func $spin (loop $again (br $again)))
  (start $spin)
  (func (export "_start")))
"#;

/// The start section sleeps an hour in `poll_oneoff` (a monotonic clock subscription).
pub const START_SLEEP: &str = r#"
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $sleep
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 3600000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))))
  (start $sleep)
  (func (export "_start")))
"#;

/// Asks for 2.5 GiB of linear memory up front.
pub const HUGE_MEMORY: &str = r#"
(module
  (memory (export "memory") 40000)
  (func (export "_start")))
"#;

/// Grows a table by a million elements at a time, forever.
pub const TABLE_BOMB: &str = r#"
(module
  (table $t 1 funcref)
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $again
      (drop (table.grow $t (ref.null func) (i32.const 1000000)))
      (br $again))))
"#;

/// Writes "a log line" to stderr forever.
pub const STDERR_FLOOD: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "a log line\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 11))
    (loop $again
      (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $again))))
"#;

/// Exits with the number of environment variables it can see.
pub const COUNT_ENV: &str = r#"
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (call $exit (i32.load (i32.const 0)))))
"#;

/// Tries to accept a connection on every descriptor it may have (3 to 9) and exits with
/// 100 + the descriptor that worked, or 0 if none did.
pub const SOCKET_ESCAPE: &str = r#"
(module
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $fd i32)
    (local.set $fd (i32.const 3))
    (loop $next
      (if (i32.eqz (call $accept (local.get $fd) (i32.const 0) (i32.const 0)))
        (then (call $exit (i32.add (i32.const 100) (local.get $fd)))))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $fd) (i32.const 10))))))
"#;

/// In the directory preopened as descriptor 4 (the first grant), creates `link` pointing
/// at `/etc/passwd`; exits with the errno.
pub const SYMLINK_ESCAPE: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_symlink" (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "/etc/passwd")
  (data (i32.const 200) "link")
  (func (export "_start")
    (call $exit (call $symlink (i32.const 100) (i32.const 11) (i32.const 4) (i32.const 200) (i32.const 4)))))
"#;

fn escaped(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b == b' ' || b == b':' || b == b',' || b == b'{' || b == b'}' {
            text.push(b as char);
        } else {
            let _ = write!(text, "\\{b:02x}");
        }
    }
    text
}

/// A module that writes `output` to stdout (looping over partial writes) and exits.
pub fn writer(output: &[u8]) -> String {
    let pages = (output.len() + 64) / 65536 + 1;
    format!(
        r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (data (i32.const 64) "{data}")
  (func (export "_start") (local $p i32) (local $n i32)
    (local.set $p (i32.const 64))
    (local.set $n (i32.const {len}))
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (i32.store (i32.const 0) (local.get $p))
        (i32.store (i32.const 4) (local.get $n))
        (br_if $done (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $p (i32.add (local.get $p) (i32.load (i32.const 8))))
        (local.set $n (i32.sub (local.get $n) (i32.load (i32.const 8))))
        (br $again)))))
"#,
        data = escaped(output),
        len = output.len()
    )
}

/// One STATE message of about `bytes` bytes.
pub fn big_state(bytes: usize) -> Vec<u8> {
    format!(r#"{{"type":"STATE","value":{{"pad":"{}"}}}}"#, "x".repeat(bytes)).into_bytes()
}

/// `streams` SCHEMA messages (one stream each), with a STATE after every
/// `streams / states` of them: many streams, many pending STATEs.
pub fn schema_flood(streams: usize, states: usize) -> Vec<u8> {
    let mut out = String::new();
    let every = (streams / states).max(1);
    for i in 0..streams {
        let _ = writeln!(
            out,
            r#"{{"type":"SCHEMA","stream":"stream-{i}","schema":{{}},"key_properties":[]}}"#
        );
        if i % every == every - 1 {
            let _ = writeln!(out, r#"{{"type":"STATE","value":{{"at":{i}}}}}"#);
        }
    }
    out.into_bytes()
}

/// A compile bomb: `n` locals updated inside `n` nested loops. About 18 KB for n = 1500,
/// and Cranelift's SSA construction and register allocation take tens of seconds of CPU
/// on it (every loop header carries every local).
pub fn compile_bomb(n: usize) -> String {
    let mut w = String::from("(module (memory (export \"memory\") 1)\n(func (export \"_start\") (local $x i32) (local");
    for _ in 0..n {
        w.push_str(" i32");
    }
    w.push_str(")\n");
    for _ in 0..n {
        w.push_str("(loop\n");
    }
    for i in 1..=n {
        let _ = writeln!(w, "(local.set {i} (i32.add (local.get {i}) (local.get 0)))");
    }
    w.push_str("(br_if 0 (local.get 0))\n");
    for _ in 0..n {
        w.push_str(")\n");
    }
    w.push_str("))");
    w
}
