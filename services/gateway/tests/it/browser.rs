//! The console in a real browser: Debian's chromium and chromedriver driven by Selenium
//! (tests/browser/console.py; scripts/test.sh installs Selenium in `.flexcore/selenium`,
//! .ci/run installs chromium). With `FLEXCORE_CONSOLE_SCREENSHOTS=<dir>` the pages are
//! saved there at 1280×800 (`scripts/console-screenshots.sh` regenerates docs/console/).

use std::path::PathBuf;

use flexcore_security::ApiRole;
use flexcore_system_tests::Options;
use serde_json::json;

use crate::Gw;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn the_console_works_in_a_real_browser() {
    let python = std::env::var_os("FLEXCORE_SELENIUM_PYTHON")
        .map_or_else(|| workspace().join(".flexcore/selenium/bin/python"), PathBuf::from);
    for needed in [
        python.clone(),
        PathBuf::from("/usr/bin/chromium"),
        PathBuf::from("/usr/bin/chromedriver"),
    ] {
        assert!(
            needed.exists(),
            "{} is missing: .ci/run installs chromium and chromium-driver (apt), scripts/test.sh Selenium",
            needed.display()
        );
    }
    let gw = Gw::start(Options {
        runner: true,
        ..Options::default()
    })
    .await;
    let pipeline = gw.pipeline("browser-etl").await;
    let schedule = gw
        .post(
            ApiRole::Admin,
            "/schedules",
            json!({"pipeline_id": pipeline, "cron": "0 3 * * *", "timezone": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(schedule.status(), 201);
    // A run long enough to be cancelled from its page.
    let long = gw
        .post(
            ApiRole::Admin,
            "/pipelines",
            json!({"name": "browser-long", "owner": "o", "steps": [
                {"plugin": "browser-etl-gen@1.0.0", "config": {"records": 1_000_000_000_u64}},
                {"plugin": "browser-etl-discard@1.0.0"}]}),
        )
        .await;
    assert_eq!(long.status(), 201);
    let mut command = tokio::process::Command::new(&python);
    command.arg(workspace().join("tests/browser/console.py")).args([
        gw.base.as_str(),
        gw.key(ApiRole::Operator),
        gw.key(ApiRole::Viewer),
        gw.key(ApiRole::Admin),
        "browser-etl",
        "browser-long",
    ]);
    if let Some(dir) = std::env::var_os("FLEXCORE_CONSOLE_SCREENSHOTS") {
        command.arg(dir);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(240), command.output())
        .await
        .expect("the browser test ends within 4 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("console browser test: ok"), "{stdout}");
}
