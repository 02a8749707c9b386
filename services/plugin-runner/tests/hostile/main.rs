//! The hostile-plugin suite (issue 15, section 2): modules written to attack the sandbox
//! (loops and sleeps in `_start` and in start sections, memory, table and compile bombs,
//! oversized modules, output, STATE and SCHEMA floods, file system, environment, socket
//! and symlink escapes, process-runtime escapes). For every case:
//! - it is stopped with the expected code within its limit plus one second;
//! - the runner's RSS comes back within 64 MiB of its baseline;
//! - a normal run right after it succeeds within a second.
//!
//! One test runs the cases in order, in its own binary, so the RSS it measures is theirs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code, unreachable_pub)]
#[path = "../it/helpers.rs"]
mod helpers;
mod modules;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flexcore_contracts::model::{DirAccess, DirGrant, PluginKind, ResourceLimits};
use flexcore_runner::executor::{code, Program, Stage};
use flexcore_runner::sandbox::{digest_of, CompileLimits, ProcessWrap, Sandbox, SandboxConfig};
use helpers::*;
use serde_json::json;

/// CPU seconds a module may take to compile in this suite.
const COMPILE_LIMIT: Duration = Duration::from_secs(2);
/// Largest module this suite's sandbox accepts.
const MAX_MODULE: u64 = 8 << 20;
/// How far above its baseline the RSS may stay after a case.
const RSS_SLACK: u64 = 64 << 20;

fn hostile_sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig {
        max_instances: 16,
        compile: CompileLimits {
            max_module_bytes: MAX_MODULE,
            timeout: COMPILE_LIMIT,
            checker: Some(env!("CARGO_BIN_EXE_flexcore-runner").into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("sandbox")
}

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib << 10
}

/// Runs without compiling ahead (compilation is part of what is under attack).
async fn attack(sandbox: &Sandbox, stages: Vec<Stage>, cancel_after: Option<Duration>) -> Ran {
    run_cold(sandbox, stages, None, cancel_after).await
}

fn limited(mut stage: Stage, limits: ResourceLimits) -> Stage {
    stage.limits = limits;
    stage
}

fn timeout(seconds: u64) -> ResourceLimits {
    ResourceLimits {
        timeout_seconds: Some(seconds),
        ..Default::default()
    }
}

/// `/bin/sh -c <script>` as a process extractor.
fn sh(name: &str, script: &str) -> Stage {
    let program = Program::Process {
        executable: "/bin/sh".into(),
        args: vec!["-c".into(), script.into(), name.into()],
    };
    stage(name, PluginKind::Extractor, program, json!({}))
}

/// A hostile case: what to run, how it must end and how long it may take.
struct Case {
    name: &'static str,
    stages: Vec<Stage>,
    /// The failure codes it may end with, or none for a run that must succeed (floods
    /// that are bounded, not stopped).
    codes: &'static [&'static str],
    /// Its limit: it must end within this plus a second.
    limit: Duration,
    cancel_after: Option<Duration>,
    /// Extra checks on what happened.
    check: Box<dyn FnOnce(&Ran)>,
}

impl Case {
    fn new(name: &'static str, stages: Vec<Stage>, codes: &'static [&'static str], limit: Duration) -> Self {
        Self {
            name,
            stages,
            codes,
            limit,
            cancel_after: None,
            check: Box::new(|_| {}),
        }
    }

    fn check(mut self, check: impl FnOnce(&Ran) + 'static) -> Self {
        self.check = Box::new(check);
        self
    }

    fn cancel_after(mut self, after: Duration) -> Self {
        self.cancel_after = Some(after);
        self
    }
}

fn wasm_cases(grant: &std::path::Path) -> Vec<Case> {
    let s = Duration::from_secs(1);
    let rw = DirGrant {
        host_path: grant.to_string_lossy().into_owned(),
        guest_path: "/out".into(),
        access: DirAccess::ReadWrite,
    };
    let mut symlinker = extractor("symlink", wat(modules::SYMLINK_ESCAPE), json!({}));
    symlinker.grants.dirs = vec![rw];
    let host_dir = grant.to_path_buf();
    let bomb = wat(&modules::compile_bomb(1500));
    let cpu_refused = Arc::new(AtomicBool::new(false));
    let remembered = Arc::clone(&cpu_refused);
    let oversized: Arc<[u8]> = [&b"\0asm\x01\0\0\0"[..], &vec![0u8; MAX_MODULE as usize]]
        .concat()
        .into();
    let oversized = Program::Wasm {
        digest: digest_of(&oversized),
        bytes: oversized,
    };
    let memory = |bytes: u64| ResourceLimits {
        memory_bytes: Some(bytes),
        timeout_seconds: Some(30),
        ..Default::default()
    };
    let output = |bytes: u64| ResourceLimits {
        max_output_bytes: Some(bytes),
        timeout_seconds: Some(30),
        ..Default::default()
    };
    vec![
        Case::new(
            "spin in _start",
            vec![
                limited(
                    extractor("spin", plugin("misbehave"), json!({"mode": "loop"})),
                    timeout(1),
                ),
                discard(),
            ],
            &[code::TIMEOUT],
            s,
        ),
        Case::new(
            "sleep in a host call",
            vec![
                limited(
                    extractor("sleep", plugin("misbehave"), json!({"mode": "sleep"})),
                    timeout(1),
                ),
                discard(),
            ],
            &[code::TIMEOUT],
            s,
        ),
        Case::new(
            "spin in the start section",
            vec![
                limited(extractor("start-spin", wat(modules::START_SPIN), json!({})), timeout(1)),
                discard(),
            ],
            &[code::TIMEOUT],
            s,
        ),
        Case::new(
            "poll_oneoff in the start section",
            vec![
                limited(
                    extractor("start-sleep", wat(modules::START_SLEEP), json!({})),
                    timeout(1),
                ),
                discard(),
            ],
            &[code::TIMEOUT],
            s,
        ),
        Case::new(
            "poll_oneoff in the start section, cancelled",
            vec![
                extractor("start-sleep", wat(modules::START_SLEEP), json!({})),
                discard(),
            ],
            &[code::CANCELLED],
            Duration::from_millis(300),
        )
        .cancel_after(Duration::from_millis(300)),
        Case::new(
            "memory bomb",
            vec![
                limited(
                    extractor("hog", plugin("misbehave"), json!({"mode": "alloc"})),
                    memory(32 << 20),
                ),
                discard(),
            ],
            &[code::MEMORY],
            s,
        ),
        // Refused when the pool's slots are smaller (sandbox), else when instantiated.
        Case::new(
            "2.5 GiB initial memory",
            vec![extractor("huge", wat(modules::HUGE_MEMORY), json!({})), discard()],
            &[code::SANDBOX, code::MEMORY],
            s,
        ),
        Case::new(
            "table bomb",
            vec![
                limited(extractor("tables", wat(modules::TABLE_BOMB), json!({})), timeout(30)),
                discard(),
            ],
            &[code::MEMORY],
            s,
        ),
        Case::new(
            "compile bomb",
            vec![
                limited(extractor("bomb", bomb.clone(), json!({})), timeout(30)),
                discard(),
            ],
            &[code::MODULE_LIMIT],
            COMPILE_LIMIT,
        )
        .check(move |ran| {
            // Killed at its CPU limit (remembered), or, on a host too busy to give it
            // that much CPU in time, by the wall clock (not remembered).
            let message = &ran.failure().message;
            assert!(
                message.contains("CPU time") || message.contains("wall-clock"),
                "{message}"
            );
            cpu_refused.store(message.contains("CPU time"), Ordering::Relaxed);
        }),
        Case::new(
            "the same compile bomb again",
            vec![limited(extractor("bomb", bomb, json!({})), timeout(30)), discard()],
            &[code::MODULE_LIMIT],
            COMPILE_LIMIT,
        )
        .check(move |ran| {
            if remembered.load(Ordering::Relaxed) {
                assert!(
                    ran.elapsed < Duration::from_millis(500),
                    "refusal remembered: {:?}",
                    ran.elapsed
                );
            }
        }),
        Case::new(
            "oversized module",
            vec![extractor("big", oversized, json!({})), discard()],
            &[code::MODULE_LIMIT],
            Duration::ZERO,
        ),
        Case::new(
            "stdout flood",
            vec![
                limited(
                    extractor("flood", plugin("misbehave"), json!({"mode": "flood"})),
                    output(1 << 20),
                ),
                discard(),
            ],
            &[code::OUTPUT_LIMIT],
            s,
        ),
        Case::new(
            "stderr flood",
            vec![
                limited(
                    extractor("chatty", wat(modules::STDERR_FLOOD), json!({})),
                    output(64 << 10),
                ),
                discard(),
            ],
            &[code::OUTPUT_LIMIT],
            s,
        ),
        Case::new(
            "STATE flood: 20,000 STATEs",
            vec![
                extractor(
                    "states",
                    plugin("generator"),
                    json!({"records": 20_000, "state_every": 1}),
                ),
                discard(),
            ],
            &[],
            Duration::from_secs(20),
        )
        .check(|ran| {
            let checkpoints = ran.checkpoints();
            // At most one per second (plus the first and the forced last).
            let bound = ran.elapsed.as_secs() as usize + 2;
            assert!(
                checkpoints.len() <= bound,
                "{} checkpoints in {:?}",
                checkpoints.len(),
                ran.elapsed
            );
            assert_eq!(
                checkpoints.last().map(|(s, _)| s.clone()),
                Some(json!({"generated": 20_000}))
            );
        }),
        Case::new(
            "a 2 MiB STATE",
            vec![
                extractor(
                    "fat-state",
                    wat(&modules::writer(&modules::big_state(2 << 20))),
                    json!({}),
                ),
                discard(),
            ],
            &[code::PROTOCOL],
            s,
        )
        .check(|ran| {
            assert!(
                ran.failure().message.contains("more than the limit of"),
                "{:?}",
                ran.failure()
            )
        }),
        Case::new(
            "10,000 SCHEMAs and 500 STATEs",
            vec![
                extractor(
                    "schemas",
                    wat(&modules::writer(&modules::schema_flood(10_000, 500))),
                    json!({}),
                ),
                discard(),
            ],
            &[],
            Duration::from_secs(10),
        ),
        Case::new(
            "file system escape",
            vec![
                extractor(
                    "escape",
                    plugin("misbehave"),
                    json!({"mode": "escape", "path": "/etc/passwd"}),
                ),
                discard(),
            ],
            &[code::EXIT_STATUS],
            s,
        )
        .check(|ran| {
            assert_eq!(
                ran.failure().message,
                "step 0 (escape): exited with status 3: cannot open /etc/passwd: No such file or directory (os error 44)"
            );
        }),
        Case::new(
            "environment escape",
            vec![extractor("env", wat(modules::COUNT_ENV), json!({})), discard()],
            &[],
            s,
        ),
        Case::new(
            "socket escape",
            vec![extractor("socket", wat(modules::SOCKET_ESCAPE), json!({})), discard()],
            &[],
            s,
        ),
        Case::new(
            "symlink out of a read-write grant",
            vec![symlinker, discard()],
            &[code::EXIT_STATUS],
            s,
        )
        .check(move |ran| {
            // EPERM (63), and nothing left on the host.
            assert_eq!(ran.failure().message, "step 0 (symlink): exited with status 63");
            assert!(
                std::fs::symlink_metadata(host_dir.join("link")).is_err(),
                "a symlink was created"
            );
        }),
        Case::new(
            "memory limits adding up past the per-run budget",
            vec![
                limited(extractor("a", plugin("generator"), json!({})), memory(1 << 30)),
                limited(transformer("b", plugin("mapper"), json!({})), memory(1 << 30)),
                limited(loader("c", plugin("discard"), json!({})), memory(1 << 30)),
            ],
            &[code::MEMORY],
            Duration::ZERO,
        ),
    ]
}

/// The process runtime's cases. What `wrap` says the host does not offer (no PID
/// namespaces or `prlimit`, e.g. an unprivileged container) is documented as not
/// contained there and not asserted.
fn process_cases(wrap: &ProcessWrap) -> Vec<Case> {
    let namespaces = wrap.unshare.is_some();
    let limits_first = wrap.prlimit.is_some();
    let dropped = wrap.run_as.is_some();
    let s = Duration::from_secs(1);
    let token = format!("flexcore-hostile-{}", std::process::id());
    let forever = format!("sh -c 'while :; do sleep 1; done' {token}");
    let gone = token.clone();
    vec![
        Case::new(
            "a setsid helper outliving its stage",
            vec![
                sh(
                    "setsid",
                    &format!("setsid {forever} >/dev/null 2>&1 & sleep 0.2; exit 0"),
                ),
                discard(),
            ],
            &[],
            s,
        )
        .check(move |_| {
            if !namespaces {
                // Not contained here (documented): clean up after it.
                for pid in processes_with(&gone) {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
                return;
            }
            let deadline = Instant::now() + Duration::from_secs(1);
            while !processes_with(&gone).is_empty() {
                assert!(Instant::now() < deadline, "the setsid helper survived its stage");
                std::thread::sleep(Duration::from_millis(20));
            }
        }),
        Case::new(
            "rlimits and user",
            vec![sh("limits", "echo \"nofile=$(ulimit -n) uid=$(id -u)\" >&2"), discard()],
            &[],
            s,
        )
        .check(move |ran| {
            let line = ran
                .logs()
                .into_iter()
                .find(|l| l.starts_with("nofile="))
                .unwrap_or_default()
                .to_owned();
            if limits_first {
                assert!(line.starts_with("nofile=1024 "), "{line}");
            }
            if dropped {
                assert!(line.ends_with("uid=65534"), "{line}");
            }
        }),
        Case::new(
            "a process stage spinning past its timeout",
            vec![limited(sh("spin", "while :; do :; done"), timeout(1)), discard()],
            &[code::TIMEOUT],
            s,
        ),
    ]
}

/// Pids of the host's processes whose command line contains `token`.
fn processes_with(token: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline).contains(token).then_some(pid)
        })
        .collect()
}

/// A normal run: 100 records through the discard loader, modules compiled already.
async fn normal_run(sandbox: &Sandbox) -> Ran {
    let stages = vec![
        extractor(
            "generator",
            plugin("generator"),
            json!({"records": 100, "state_every": 50}),
        ),
        discard(),
    ];
    warm(sandbox, &stages).await;
    attack(sandbox, stages, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_case_is_stopped_within_its_limit_and_leaves_the_runner_well() {
    let sandbox = hostile_sandbox();
    let grant = tempfile::tempdir().unwrap();
    // Warm up (plugins built and compiled, pools touched) before taking the baseline.
    for _ in 0..3 {
        normal_run(&sandbox).await.summary();
    }
    for stage in [plugin("misbehave"), plugin("generator")] {
        warm(&sandbox, &[extractor("warm", stage, json!({}))]).await;
    }
    let baseline = rss();
    let mut cases = wasm_cases(grant.path());
    cases.extend(process_cases(sandbox.process_wrap()));
    let mut report = Vec::new();
    for case in cases {
        let ran = attack(&sandbox, case.stages, case.cancel_after).await;
        if case.codes.is_empty() {
            ran.summary();
        } else {
            let failure = ran.failure();
            assert!(
                case.codes.contains(&failure.code.as_str()),
                "{}: {failure:?}",
                case.name
            );
        }
        assert!(
            ran.elapsed < case.limit + Duration::from_secs(1),
            "{}: took {:?}, more than a second past its limit of {:?}",
            case.name,
            ran.elapsed,
            case.limit
        );
        (case.check)(&ran);
        let elapsed = ran.elapsed;
        drop(ran);
        let normal = normal_run(&sandbox).await;
        normal.summary();
        assert!(
            normal.elapsed < Duration::from_secs(1),
            "{}: the normal run after it took {:?}",
            case.name,
            normal.elapsed
        );
        // Freed memory may take a moment to be returned (pool slots are decommitted).
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut after = rss();
        while after > baseline + RSS_SLACK && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            after = rss();
        }
        assert!(
            after <= baseline + RSS_SLACK,
            "{}: RSS {} MiB, baseline {} MiB",
            case.name,
            after >> 20,
            baseline >> 20
        );
        report.push(format!(
            "{:<48} stopped in {elapsed:>9.2?}, then a normal run in {:>8.2?}; RSS {:+} MiB",
            case.name,
            normal.elapsed,
            (i64::try_from(after).unwrap() - i64::try_from(baseline).unwrap()) >> 20
        ));
    }
    eprintln!("baseline RSS {} MiB\n{}", baseline >> 20, report.join("\n"));
}
