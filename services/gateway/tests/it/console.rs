//! The web console over HTTP: sign-in with a key into an HttpOnly cookie, pages rendered
//! on the server with everything escaped, role-aware actions, runs started from a page,
//! and what a cookie may not do (write to the API, post from another origin).

use std::time::Duration;

use flexcore_security::ApiRole;
use flexcore_system_tests::Options;
use serde_json::{json, Value};

use crate::Gw;

/// A client that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `key` through the form; the session cookie (`name=value`).
async fn sign_in(gw: &Gw, key: &str) -> String {
    let response = browser()
        .post(format!("{}/console/login", gw.base))
        .header("Origin", &gw.base)
        .form(&[("token", key), ("next", "/console/pipelines")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/console/pipelines");
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_owned()
}

async fn page(gw: &Gw, cookie: &str, path: &str) -> (u16, String) {
    let response = browser()
        .get(format!("{}{path}", gw.base))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
    }
    (status, response.text().await.unwrap())
}

async fn post(gw: &Gw, cookie: &str, path: &str, origin: &str) -> reqwest::Response {
    browser()
        .post(format!("{}{path}", gw.base))
        .header("Cookie", cookie)
        .header("Origin", origin)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_signed_in_browser_reads_the_system_and_acts_as_its_role_allows() {
    let gw = Gw::start(Options {
        runner: true,
        ..Options::default()
    })
    .await;
    let pipeline = gw.pipeline("console-etl").await;
    let described = gw
        .post(
            ApiRole::Admin,
            "/pipelines",
            json!({"name": "escaped", "owner": "o", "description": "<script>alert(1)</script>",
                   "steps": [{"plugin": "console-etl-gen@1.0.0"}, {"plugin": "console-etl-discard@1.0.0"}]}),
        )
        .await;
    assert_eq!(described.status(), 201);
    let described: Value = described.json().await.unwrap();
    let described = described["aggregate_id"].as_str().unwrap().to_owned();

    // Without a session: to the sign-in page, and back after it.
    let anonymous = browser().get(format!("{}/", gw.base)).send().await.unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(anonymous.headers()["location"], "/console/login?next=%2F");
    let (status, login) = page(&gw, "", "/console/login").await;
    assert_eq!(status, 200);
    assert!(login.contains("<label for=\"token\">"), "{login}");
    let refused = browser()
        .post(format!("{}/console/login", gw.base))
        .form(&[("token", "fck_not-a-key")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 303);
    assert!(refused.headers()["location"].to_str().unwrap().contains("failed=1"));
    assert!(refused.headers().get("set-cookie").is_none());

    // A viewer reads every page and sees no button it may not use.
    let viewer = sign_in(&gw, gw.key(ApiRole::Viewer)).await;
    let (status, overview) = page(&gw, &viewer, "/").await;
    assert_eq!(status, 200, "{overview}");
    assert!(
        overview.contains("Services") && overview.contains("key:watcher"),
        "{overview}"
    );
    // Each service with the version it names in its answers and announcements (the
    // runner's first announcement may come a moment after the stack is up).
    let version = format!("version {}", env!("CARGO_PKG_VERSION"));
    let row = |overview: &str, service: &str| {
        let row = overview.split(service).nth(1).unwrap_or_default();
        row.split("</tr>").next().unwrap_or_default().to_owned()
    };
    if let Err(e) = flexcore_testkit::wait_until(Duration::from_secs(10), "every service announced", || async {
        let overview = page(&gw, &viewer, "/").await.1;
        ["command service", "projection service", "runners"]
            .iter()
            .all(|service| row(&overview, service).contains(&version))
    })
    .await
    {
        panic!("{e}: {}", page(&gw, &viewer, "/").await.1);
    }
    // The list reads the pipelines read model, which a busy machine updates a moment later.
    flexcore_testkit::wait_until(Duration::from_secs(10), "the pipeline listed", || async {
        page(&gw, &viewer, "/console/pipelines?q=console")
            .await
            .1
            .contains("console-etl")
    })
    .await
    .unwrap();
    let (_, list) = page(&gw, &viewer, "/console/pipelines?q=console").await;
    assert!(list.contains("console-etl") && !list.contains(">escaped<"), "{list}");
    let (_, detail) = page(&gw, &viewer, &format!("/console/pipelines/{pipeline}")).await;
    assert!(detail.contains("console-etl-gen@1.0.0"), "{detail}");
    assert!(!detail.contains("Run now") && !detail.contains("Pause"), "{detail}");
    let (_, hostile) = page(&gw, &viewer, &format!("/console/pipelines/{described}")).await;
    assert!(hostile.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{hostile}");
    assert!(!hostile.contains("<script>alert"), "{hostile}");
    // A viewer's action posted anyway is refused by role.
    let forced = post(
        &gw,
        &viewer,
        &format!("/console/pipelines/{pipeline}/execute"),
        &gw.base,
    )
    .await;
    assert_eq!(forced.status(), 403);

    // An operator runs the pipeline from its page and lands on the run's page.
    let operator = sign_in(&gw, gw.key(ApiRole::Operator)).await;
    let (_, detail) = page(&gw, &operator, &format!("/console/pipelines/{pipeline}")).await;
    assert!(detail.contains("Run now") && detail.contains("Pause"), "{detail}");
    // Not from another origin (a page elsewhere posting with the cookie).
    let csrf = post(
        &gw,
        &operator,
        &format!("/console/pipelines/{pipeline}/execute"),
        "https://evil.example",
    )
    .await;
    assert_eq!(csrf.status(), 403);
    let started = post(
        &gw,
        &operator,
        &format!("/console/pipelines/{pipeline}/execute"),
        &gw.base,
    )
    .await;
    assert_eq!(started.status(), 303);
    let run_page = started.headers()["location"].to_str().unwrap().to_owned();
    let run_id = run_page
        .trim_start_matches("/console/runs/")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    assert!(run_page.contains("?after="), "the run page reads the write: {run_page}");
    gw.stack
        .wait_run_event(&run_id, "run.succeeded", Duration::from_secs(60))
        .await;
    flexcore_testkit::wait_until(Duration::from_secs(10), "the run page shows the end", || async {
        page(&gw, &operator, &run_page).await.1.contains("state-succeeded")
    })
    .await
    .unwrap();
    let (_, run) = page(&gw, &operator, &run_page).await;
    assert!(
        run.contains("data-live=\"false\"") && !run.contains(">Cancel<"),
        "{run}"
    );
    assert!(run.contains(">Run again<") && run.contains("Log lines"), "{run}");
    let (_, runs) = page(&gw, &operator, &format!("/console/runs?pipeline={pipeline}")).await;
    assert!(runs.contains(&run_id), "{runs}");
    // By time: a date is midnight UTC; a later one leaves the run out, the form keeps it.
    let (_, runs) = page(
        &gw,
        &operator,
        &format!("/console/runs?pipeline={pipeline}&since=2000-01-01"),
    )
    .await;
    assert!(runs.contains(&run_id), "{runs}");
    let (status, later) = page(
        &gw,
        &operator,
        &format!("/console/runs?pipeline={pipeline}&since=2999-01-01T00:00"),
    )
    .await;
    assert_eq!(status, 200, "{later}");
    assert!(
        !later.contains(&run_id) && later.contains("value=\"2999-01-01T00:00\""),
        "{later}"
    );
    // A time that is none: the query service's refusal, shown escaped.
    let (status, refused) = page(&gw, &operator, "/console/runs?since=yesterday%3Cb%3E").await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused.contains("role=\"alert\"") && !refused.contains("yesterday<b>"),
        "{refused}"
    );

    // The cookie reads the API (the run page's live stream) but writes nothing there.
    let read = browser()
        .get(gw.url(&format!("/runs/{run_id}")))
        .header("Cookie", &operator)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let write = browser()
        .post(gw.url(&format!("/pipelines/{pipeline}/pause")))
        .header("Cookie", &operator)
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 401);

    // Schedules: next fires, paused from the page.
    let schedule = gw
        .post(
            ApiRole::Admin,
            "/schedules",
            json!({"pipeline_id": pipeline, "cron": "0 3 * * *", "timezone": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(schedule.status(), 201);
    let position = schedule.headers()["consistency-position"].to_str().unwrap().to_owned();
    let schedule: Value = schedule.json().await.unwrap();
    let schedule = schedule["aggregate_id"].as_str().unwrap().to_owned();
    gw.get(
        ApiRole::Viewer,
        &format!("/schedules/{schedule}?min_position={position}"),
    )
    .await;
    let (_, schedules) = page(&gw, &operator, "/console/schedules").await;
    assert!(
        schedules.contains("0 3 * * *") && schedules.contains("Europe/Berlin"),
        "{schedules}"
    );
    assert_eq!(
        schedules.matches("<li><time").count(),
        5,
        "five next fires: {schedules}"
    );
    assert!(schedules.contains("03:00 CET"), "in the schedule's zone: {schedules}");
    // The pipeline's page lists it; the overview has its next fire, refreshed by the script.
    let (_, detail) = page(&gw, &operator, &format!("/console/pipelines/{pipeline}")).await;
    assert!(detail.contains("0 3 * * *") && detail.contains(">Pause<"), "{detail}");
    let (_, overview) = page(&gw, &operator, "/").await;
    let fires = overview.split("Next schedule fires").nth(1).unwrap_or_default();
    assert!(
        fires.contains("<time data-local datetime=")
            && fires.contains(&format!("/console/pipelines/{pipeline}\">console-etl<")),
        "{overview}"
    );
    assert!(overview.contains("data-overview data-events="), "{overview}");
    let paused = post(
        &gw,
        &operator,
        &format!("/console/schedules/{schedule}/pause"),
        &gw.base,
    )
    .await;
    assert_eq!(paused.status(), 303);
    let back = paused.headers()["location"].to_str().unwrap().to_owned();
    let (_, schedules) = page(&gw, &operator, &back).await;
    assert!(
        schedules.contains("state-paused") && schedules.contains(">Resume<"),
        "{schedules}"
    );

    // A backfill from its form: every slot of the range, and what became of it.
    let (status, form) = page(&gw, &operator, &format!("/console/schedules/{schedule}/backfill")).await;
    assert_eq!(status, 200);
    assert!(form.contains("<label for=\"from\">"), "{form}");
    let now = chrono::Utc::now();
    let backfilled = browser()
        .post(format!("{}/console/schedules/{schedule}/backfill", gw.base))
        .header("Cookie", &operator)
        .header("Origin", &gw.base)
        .form(&[
            ("from", (now - chrono::Duration::days(3)).to_rfc3339()),
            ("to", now.to_rfc3339()),
            ("overlap", "skip".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(backfilled.status(), 200);
    let answer = backfilled.text().await.unwrap();
    assert!(answer.contains("What became of each slot"), "{answer}");
    let slots = answer.matches("state-requested").count() + answer.matches("state-skipped").count();
    assert_eq!(slots, 3, "three 03:00 slots in three days: {answer}");

    // Archiving: admins only, after a page that says what it means.
    let (_, detail) = page(&gw, &operator, &format!("/console/pipelines/{described}")).await;
    assert!(!detail.contains("Archive"), "{detail}");
    let refused = post(
        &gw,
        &operator,
        &format!("/console/pipelines/{described}/archive"),
        &gw.base,
    )
    .await;
    assert_eq!(refused.status(), 403);
    let admin = sign_in(&gw, gw.key(ApiRole::Admin)).await;
    let (_, detail) = page(&gw, &admin, &format!("/console/pipelines/{described}")).await;
    assert!(detail.contains("/archive\">Archive…</a>"), "{detail}");
    let (_, confirm) = page(&gw, &admin, &format!("/console/pipelines/{described}/archive")).await;
    assert!(
        confirm.contains("cannot be undone") && confirm.contains(">Archive the pipeline<"),
        "{confirm}"
    );
    let archived = post(
        &gw,
        &admin,
        &format!("/console/pipelines/{described}/archive"),
        &gw.base,
    )
    .await;
    assert_eq!(archived.status(), 303);
    let (_, detail) = page(&gw, &admin, archived.headers()["location"].to_str().unwrap()).await;
    assert!(
        detail.contains("state-archived") && !detail.contains(">Edit<"),
        "{detail}"
    );

    // Plugins: the catalogue; the upload form for admins only.
    let (_, plugins) = page(&gw, &operator, "/console/plugins").await;
    assert!(
        plugins.contains("console-etl-gen@1.0.0") && !plugins.contains("Upload a module"),
        "{plugins}"
    );
    let (_, plugins) = page(&gw, &admin, "/console/plugins").await;
    assert!(plugins.contains("Upload a module"), "{plugins}");
    let module = flexcore_system_tests::plugins::wasm("flexcore-plugin-discard");
    let form = reqwest::multipart::Form::new()
        .text("name", "console-upload")
        .text("version", "2.0.0")
        .text("kind", "loader")
        .part(
            "module",
            reqwest::multipart::Part::bytes(module).file_name("discard.wasm"),
        );
    let uploaded = browser()
        .post(format!("{}/console/plugins", gw.base))
        .header("Cookie", &admin)
        .header("Origin", &gw.base)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 303, "{}", uploaded.text().await.unwrap());
    flexcore_testkit::wait_until(Duration::from_secs(10), "the upload listed", || async {
        page(&gw, &admin, "/console/plugins")
            .await
            .1
            .contains("console-upload@2.0.0")
    })
    .await
    .unwrap();

    // A pipeline from YAML: errors at their line (the file's own, then the command
    // service's), the text kept; then created with its schedule, and edited.
    let (status, _) = page(&gw, &operator, "/console/pipelines/new").await;
    assert_eq!(status, 403, "operators do not create pipelines");
    let (status, new) = page(&gw, &admin, "/console/pipelines/new").await;
    assert_eq!(status, 200);
    assert!(new.contains("<textarea id=\"yaml\""), "{new}");
    let submit = |cookie: String, path: String, yaml: String| {
        let base = gw.base.clone();
        async move {
            let response = browser()
                .post(format!("{base}{path}"))
                .header("Cookie", cookie)
                .header("Origin", &base)
                .form(&[("yaml", yaml)])
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned());
            (status, location, response.text().await.unwrap())
        }
    };
    let good = "name: from-yaml\nowner: web\nsteps:\n  - plugin: console-etl-gen@1.0.0\n    config: {records: 5}\n  - plugin: console-etl-discard@1.0.0\nschedules:\n  - cron: \"0 4 * * *\"\n    timezone: UTC\n";
    let unknown_key = good.replace("    config: {records: 5}", "    confg: {records: 5}");
    let (status, _, shown) = submit(admin.clone(), "/console/pipelines/new".into(), unknown_key).await;
    assert_eq!(status, 422);
    assert!(
        shown.contains("pipeline.yaml:5:") && shown.contains("class=\"at-fault\""),
        "{shown}"
    );
    assert!(shown.contains("confg: {records: 5}"), "the text is kept: {shown}");
    let typo = good.replace("console-etl-gen@1.0.0", "console-etl-gne@1.0.0");
    let (status, _, shown) = submit(admin.clone(), "/console/pipelines/new".into(), typo).await;
    assert_eq!(status, 422);
    assert!(
        shown.contains("pipeline.yaml:4:") && shown.contains("not registered"),
        "{shown}"
    );
    let (status, location, _) = submit(admin.clone(), "/console/pipelines/new".into(), good.to_owned()).await;
    assert_eq!(status, 303);
    let location = location.unwrap();
    let (_, created) = page(&gw, &admin, &location).await;
    assert!(created.contains("from-yaml") && created.contains(">Edit<"), "{created}");
    let created_id = location
        .trim_start_matches("/console/pipelines/")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let (_, edit) = page(&gw, &admin, &format!("/console/pipelines/{created_id}/edit")).await;
    assert!(edit.contains("name: &quot;from-yaml&quot;"), "{edit}");
    let edited = good
        .replace("{records: 5}", "{records: 7}")
        .replace("schedules:\n  - cron: \"0 4 * * *\"\n    timezone: UTC\n", "");
    let (status, location, shown) =
        submit(admin.clone(), format!("/console/pipelines/{created_id}/edit"), edited).await;
    assert_eq!(status, 303, "{shown}");
    let (_, updated) = page(&gw, &admin, &location.unwrap()).await;
    assert!(
        updated.contains("version 2") && updated.contains("&quot;records&quot;:7"),
        "{updated}"
    );

    // The audit log, filtered: only run events, each with its actor; a live tail.
    let (_, audit) = page(&gw, &operator, "/console/events?aggregate_type=run").await;
    assert!(audit.contains("run.requested") && audit.contains("key:ops"), "{audit}");
    assert!(!audit.contains("pipeline.created"), "{audit}");
    assert!(
        audit.contains("data-tail=\"/api/v1/flexcore/events/stream?aggregate_type=run\""),
        "{audit}"
    );

    // Signing out clears the cookie.
    let out = post(&gw, &operator, "/console/logout", &gw.base).await;
    assert_eq!(out.status(), 303);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    // The assets are served without a session.
    let css = browser()
        .get(format!("{}/console/assets/console.css", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    assert!(css.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
}
