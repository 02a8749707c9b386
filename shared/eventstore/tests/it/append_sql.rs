//! `flexcore_append` has one canonical source (`shared/eventstore/sql/flexcore_append.sql`):
//! the newest migration that defines it repeats it verbatim, and a migrated database runs
//! exactly it.

use flexcore_eventstore::append::APPEND_FUNCTION_SQL;

/// The function's definition in the canonical file: from `CREATE` to the closing `$$;`.
fn canonical_definition() -> &'static str {
    let start = APPEND_FUNCTION_SQL
        .find("\nCREATE ")
        .expect("a CREATE statement at the start of a line in the canonical file")
        + 1;
    APPEND_FUNCTION_SQL[start..].trim_end()
}

/// The body between the `$$` quotes.
fn body(definition: &str) -> &str {
    let open = definition.find("$$").expect("an opening $$") + 2;
    let close = definition.rfind("$$").expect("a closing $$");
    definition[open..close].trim()
}

#[test]
fn the_newest_migration_defining_the_function_repeats_the_canonical_source() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut migrations: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "sql"))
        .collect();
    migrations.sort();
    let newest = migrations
        .iter()
        .rev()
        .find(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            text.contains("FUNCTION flexcore_append(")
        })
        .expect("a migration defining flexcore_append");
    let text = std::fs::read_to_string(newest).unwrap();
    assert!(
        text.contains(canonical_definition()),
        "{} does not repeat shared/eventstore/sql/flexcore_append.sql verbatim: after changing the function there, add a migration repeating it",
        newest.display()
    );
}

#[tokio::test]
async fn a_migrated_database_runs_the_canonical_function() {
    let db = flexcore_testkit::TestDb::create().await.unwrap();
    let (arguments, source): (String, String) = sqlx::query_as(
        "SELECT pg_get_function_identity_arguments(p.oid), p.prosrc \
           FROM pg_proc p WHERE p.proname = 'flexcore_append'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let definition = canonical_definition();
    assert!(
        definition.starts_with(&format!("CREATE FUNCTION flexcore_append({arguments})"))
            || definition.starts_with(&format!("CREATE OR REPLACE FUNCTION flexcore_append({arguments})")),
        "deployed signature ({arguments}) differs from the canonical one"
    );
    assert_eq!(
        source.trim(),
        body(definition),
        "the deployed body differs from the canonical source"
    );
}
