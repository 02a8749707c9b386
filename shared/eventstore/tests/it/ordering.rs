use flexcore_eventstore::Checkpoint;
use flexcore_testkit::TestDb;
use uuid::Uuid;

use crate::{event, request, store};

/// An event that commits late with a lower position must not be skipped by a reader of
/// the global log: the reader stops at the open transaction until it ends.
#[tokio::test]
async fn global_reader_never_skips_a_late_commit_with_a_lower_position() {
    let db = TestDb::create().await.unwrap();
    let store = store(&db);
    // Hold a transaction open that has inserted an event (it took the lower position).
    let mut slow = db.pool.begin().await.unwrap();
    let slow_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_type, schema_version, data, metadata) \
         VALUES ($1, 'pipeline', $2, 1, 'pipeline.paused', 1, '{}', '{}')",
    )
    .bind(Uuid::now_v7())
    .bind(slow_id)
    .execute(&mut *slow)
    .await
    .unwrap();
    // Many later writers commit with higher positions.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(request(None, vec![event(Uuid::now_v7(), 1)]))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // A follower reading now sees none of them: they are beyond the open transaction.
    let mut checkpoint = Checkpoint::default();
    let mut seen = Vec::new();
    let early = store.read_all(checkpoint, 1000).await.unwrap();
    assert!(early.is_empty(), "read past an open transaction: {early:?}");
    slow.commit().await.unwrap();
    // Now the follower gets everything, the slow event first, each exactly once. (Other
    // tests' open transactions may hold the horizon back for a moment: poll.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.len() < 21 && std::time::Instant::now() < deadline {
        let batch = store.read_all(checkpoint, 7).await.unwrap();
        match batch.last() {
            Some(last) => checkpoint = last.checkpoint(),
            None => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
        seen.extend(batch);
    }
    assert_eq!(seen.len(), 21);
    assert_eq!(seen[0].aggregate_id, slow_id);
    let mut positions: Vec<u64> = seen.iter().map(|e| e.global_position).collect();
    positions.dedup();
    assert_eq!(positions.len(), 21);
    assert!(seen.windows(2).all(|w| w[0].checkpoint() < w[1].checkpoint()));
}

/// The global reader's statement, as the generic plan of a prepared statement (what a
/// long-lived reader such as the relay ends up with), walks the `(transaction_id,
/// global_position)` index from the checkpoint and stops at its limit: no plan that sorts
/// every event after the checkpoint, whose cost grows with the backlog.
#[tokio::test]
async fn the_global_reader_walks_the_index_whatever_the_backlog() {
    let db = TestDb::create().await.unwrap();
    sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_type, schema_version, data, metadata) \
         SELECT gen_random_uuid(), 'pipeline', gen_random_uuid(), 1, 'pipeline.paused', 1, '{}', '{}' \
         FROM generate_series(1, 20000)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE events").execute(&db.pool).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    let statement = flexcore_eventstore::store::READ_ALL_SQL.replace("$1::text::xid8", "$1::xid8");
    sqlx::query(&format!("PREPARE global_read(xid8, bigint, bigint) AS {statement}"))
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE global_read('0', 0, 1000)")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("Index Scan using events_transaction_order"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");
}
