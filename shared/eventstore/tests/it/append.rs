use flexcore_eventstore::{AppendOutcome, SlotClaim, UniqueKey, VersionCheck};
use flexcore_testkit::TestDb;
use uuid::Uuid;

use crate::{event, request, store};

#[tokio::test]
async fn append_assigns_positions_and_reads_back_in_version_order() {
    let db = TestDb::create().await.unwrap();
    let store = store(&db);
    let id = Uuid::now_v7();
    let command_id = Uuid::now_v7();
    let out = store
        .append(request(Some(command_id), vec![event(id, 1), event(id, 2)]))
        .await
        .unwrap();
    let AppendOutcome::Committed { positions } = out else {
        panic!("{out:?}")
    };
    assert_eq!(positions.len(), 2);
    assert!(positions[0] < positions[1]);
    // The reply kept for a retry of the command id has the last event's position.
    let stored = store.command(command_id).await.unwrap().unwrap();
    assert_eq!(stored.reply["global_position"], serde_json::json!(positions[1]));
    assert_eq!(stored.reply["ok"], serde_json::json!(true));
    let read = store.read_aggregate(id, 0).await.unwrap();
    assert_eq!(read.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(store.read_aggregate(id, 1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn several_aggregates_read_in_one_query_come_back_grouped_in_the_order_asked() {
    let db = TestDb::create().await.unwrap();
    let store = store(&db);
    let (a, b, missing) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    store
        .append(request(
            None,
            vec![event(a, 1), event(a, 2), event(b, 1), event(b, 2), event(b, 3)],
        ))
        .await
        .unwrap();
    let read = store.read_aggregates(&[(b, 1), (missing, 0), (a, 0)]).await.unwrap();
    let got: Vec<(Uuid, u64)> = read.iter().map(|e| (e.aggregate_id, e.version)).collect();
    assert_eq!(got, vec![(b, 2), (b, 3), (a, 1), (a, 2)]);
}

#[tokio::test]
async fn same_version_twice_is_a_conflict_and_writes_nothing() {
    let db = TestDb::create().await.unwrap();
    let store = store(&db);
    let id = Uuid::now_v7();
    store.append(request(None, vec![event(id, 1)])).await.unwrap();
    let out = store
        .append(request(None, vec![event(id, 1), event(id, 2)]))
        .await
        .unwrap();
    assert_eq!(out, AppendOutcome::VersionConflict);
    assert_eq!(store.read_aggregate(id, 0).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_checked_version_that_moved_on_is_stale_and_writes_nothing() {
    let db = TestDb::create().await.unwrap();
    let store = store(&db);
    let read = Uuid::now_v7();
    store.append(request(None, vec![event(read, 1)])).await.unwrap();
    let written = Uuid::now_v7();
    let check = |aggregate_id, version| VersionCheck { aggregate_id, version };
    let with_checks = |checks: Vec<VersionCheck>| {
        let mut r = request(Some(Uuid::new_v4()), vec![event(written, 1)]);
        r.checks = checks;
        r
    };
    // The checked aggregate is at version 1, not 0: nothing is written, not even the
    // command log entry (the same command id can be decided again).
    let stale = with_checks(vec![check(read, 1), check(Uuid::now_v7(), 0), check(read, 0)]);
    let command_id = stale.command_id;
    assert_eq!(
        store.append(stale.clone()).await.unwrap(),
        AppendOutcome::StaleRead { aggregate_id: read }
    );
    assert!(store.read_aggregate(written, 0).await.unwrap().is_empty());
    assert!(store.command(command_id.unwrap()).await.unwrap().is_none());
    // At the versions checked (an absent aggregate at 0), the command commits.
    let mut fresh = stale;
    fresh.checks = vec![check(read, 1), check(Uuid::now_v7(), 0)];
    assert!(matches!(
        store.append(fresh).await.unwrap(),
        AppendOutcome::Committed { .. }
    ));
    assert_eq!(store.read_aggregate(written, 0).await.unwrap().len(), 1);
    // A stale command in a batch does not hold back the others.
    let others: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let checks = if i % 2 == 0 {
                vec![check(read, 7)]
            } else {
                vec![check(read, 1)]
            };
            tokio::spawn(async move {
                let mut r = request(None, vec![event(Uuid::now_v7(), 1)]);
                r.checks = checks;
                (i, store.append(r).await.unwrap())
            })
        })
        .collect();
    for task in others {
        let (i, outcome) = task.await.unwrap();
        if i % 2 == 0 {
            assert_eq!(outcome, AppendOutcome::StaleRead { aggregate_id: read });
        } else {
            assert!(matches!(outcome, AppendOutcome::Committed { .. }), "{outcome:?}");
        }
    }
}

#[tokio::test]
async fn command_id_is_idempotent_sequentially_and_concurrently() {
    let db = TestDb::create().await.unwrap();
    let store = store(&db);
    let id = Uuid::now_v7();
    let command_id = Uuid::new_v4();
    // Concurrently: 8 identical appends race; exactly one commits.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(request(Some(command_id), vec![event(id, 1)]))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut committed = 0;
    let mut replies = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            AppendOutcome::Committed { .. } => {
                committed += 1;
                replies.push(store.command(command_id).await.unwrap().unwrap().reply);
            }
            AppendOutcome::Duplicate(stored) => replies.push(stored.reply),
            // Lost the version race before reaching the command log: the caller then
            // consults the command log (the command service does).
            AppendOutcome::VersionConflict => replies.push(store.command(command_id).await.unwrap().unwrap().reply),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(committed, 1);
    assert!(replies.windows(2).all(|w| w[0] == w[1]), "{replies:?}");
    // Sequentially, with a fresh version: still the first reply, no second event.
    let again = store
        .append(request(Some(command_id), vec![event(id, 2)]))
        .await
        .unwrap();
    let AppendOutcome::Duplicate(stored) = again else {
        panic!("{again:?}")
    };
    assert_eq!(stored.reply, replies[0]);
    assert_eq!(store.read_aggregate(id, 0).await.unwrap().len(), 1);
}

#[tokio::test]
async fn unique_keys_are_claimed_once_and_released() {
    let db = TestDb::create().await.unwrap();
    let store = store(&db);
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let claim = |owner| UniqueKey {
        scope: "pipeline_name".into(),
        key: "orders".into(),
        owner,
    };
    let mut first = request(None, vec![event(a, 1)]);
    first.claims.push(claim(a));
    assert!(matches!(
        store.append(first).await.unwrap(),
        AppendOutcome::Committed { .. }
    ));
    let mut second = request(None, vec![event(b, 1)]);
    second.claims.push(claim(b));
    let out = store.append(second.clone()).await.unwrap();
    assert_eq!(
        out,
        AppendOutcome::UniqueTaken {
            scope: "pipeline_name".into(),
            key: "orders".into(),
            owner: Some(a)
        }
    );
    assert!(
        store.read_aggregate(b, 0).await.unwrap().is_empty(),
        "a refused command writes nothing"
    );
    let mut release = request(None, vec![event(a, 2)]);
    release.releases.push(claim(a));
    assert!(matches!(
        store.append(release).await.unwrap(),
        AppendOutcome::Committed { .. }
    ));
    second.events = vec![event(b, 1)];
    assert!(matches!(
        store.append(second).await.unwrap(),
        AppendOutcome::Committed { .. }
    ));
}

#[tokio::test]
async fn slot_pools_never_exceed_their_size_under_concurrency() {
    let db = TestDb::create().await.unwrap();
    let store = store(&db);
    let pool = Uuid::now_v7();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let run = Uuid::now_v7();
                let mut r = request(None, vec![event(run, 1)]);
                r.slot_acquire = Some(SlotClaim {
                    pool,
                    holder: run,
                    max: 3,
                });
                (run, store.append(r).await.unwrap())
            })
        })
        .collect();
    let mut holders = Vec::new();
    for t in tasks {
        let (run, out) = t.await.unwrap();
        match out {
            AppendOutcome::Committed { .. } => holders.push(run),
            AppendOutcome::SlotsFull { active, max } => assert_eq!((active, max), (3, 3)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(holders.len(), 3);
    let mut release = request(None, vec![event(holders[0], 2)]);
    release.slot_release = Some(SlotClaim {
        pool,
        holder: holders[0],
        max: 0,
    });
    store.append(release).await.unwrap();
    let run = Uuid::now_v7();
    let mut r = request(None, vec![event(run, 1)]);
    r.slot_acquire = Some(SlotClaim {
        pool,
        holder: run,
        max: 3,
    });
    assert!(matches!(
        store.append(r).await.unwrap(),
        AppendOutcome::Committed { .. }
    ));
}

#[tokio::test]
async fn events_cannot_be_updated_or_deleted() {
    let db = TestDb::create().await.unwrap();
    let store = store(&db);
    store
        .append(request(None, vec![event(Uuid::now_v7(), 1)]))
        .await
        .unwrap();
    let update = sqlx::query("UPDATE events SET event_type = 'x'")
        .execute(&db.pool)
        .await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM events").execute(&db.pool).await;
    assert!(delete.is_err());
}
