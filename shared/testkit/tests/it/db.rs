use flexcore_testkit::{init_tracing, TestDb};
use sqlx::{Connection as _, PgConnection};

/// Whether a database of that name exists on the test server.
async fn exists(name: &str) -> bool {
    let admin = std::env::var(flexcore_testkit::db::DATABASE_URL_VAR)
        .unwrap_or_else(|_| flexcore_testkit::db::DEFAULT_DATABASE_URL.to_owned());
    let mut conn = PgConnection::connect(&admin).await.unwrap();
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

async fn current_database(db: &TestDb) -> String {
    sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn each_test_db_is_distinct_and_dropped_afterwards() {
    init_tracing();
    let a = TestDb::create().await.unwrap();
    let b = TestDb::create().await.unwrap();
    assert_ne!(a.name(), b.name());
    assert_ne!(a.url, b.url);
    assert!(a.name().starts_with("flexcore_t_"));
    assert_eq!(current_database(&a).await, a.name());
    assert_eq!(current_database(&b).await, b.name());

    // A table in one is invisible in the other.
    sqlx::query("CREATE TABLE only_in_a (id int)")
        .execute(&a.pool)
        .await
        .unwrap();
    let in_b: Option<String> = sqlx::query_scalar("SELECT to_regclass('only_in_a')::text")
        .fetch_one(&b.pool)
        .await
        .unwrap();
    assert_eq!(in_b, None);

    // The URL reaches the same database as the pool.
    let mut direct = PgConnection::connect(&a.url).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut direct)
        .await
        .unwrap();
    assert_eq!(name, a.name());

    let names = [a.name().to_owned(), b.name().to_owned()];
    assert!(exists(&names[0]).await && exists(&names[1]).await);
    // Dropped with a connection still open: `WITH (FORCE)` ends it.
    drop(a);
    drop(b);
    assert!(!exists(&names[0]).await);
    assert!(!exists(&names[1]).await);
}

#[tokio::test]
async fn create_runs_the_migrator_and_create_empty_does_not() {
    init_tracing();
    let migrated = TestDb::create().await.unwrap();
    let empty = TestDb::create_empty().await.unwrap();
    let ledger = "SELECT to_regclass('_sqlx_migrations') IS NOT NULL";
    let has_ledger: bool = sqlx::query_scalar(ledger).fetch_one(&migrated.pool).await.unwrap();
    assert!(has_ledger);
    let has_ledger: bool = sqlx::query_scalar(ledger).fetch_one(&empty.pool).await.unwrap();
    assert!(!has_ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_db_can_be_dropped_on_a_multi_thread_runtime() {
    let db = TestDb::create_empty().await.unwrap();
    let name = db.name().to_owned();
    drop(db);
    assert!(!exists(&name).await);
}
