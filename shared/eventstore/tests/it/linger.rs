//! The linger: a group-commit writer holds a batch open for commands announced as
//! deciding, and a group reader for the reads such commands may still make; neither
//! waits for anything else.

use std::time::Duration;

use flexcore_eventstore::append::GroupCommitConfig;
use flexcore_eventstore::{Announced, AppendOutcome, EventStore};
use flexcore_testkit::TestDb;
use uuid::Uuid;

use crate::{event, request};

/// One writer, so every batch is one transaction; a linger long enough that a batch
/// closed by it rather than by the announcements would show.
fn lingering_store(db: &TestDb) -> EventStore {
    EventStore::new(
        db.pool.clone(),
        GroupCommitConfig {
            writers: 1,
            batch_max: 32,
            linger: Duration::from_secs(5),
        },
    )
}

/// The transaction that wrote aggregate `id`'s events.
async fn writing_transaction(db: &TestDb, id: Uuid) -> String {
    sqlx::query_scalar("SELECT DISTINCT transaction_id::text FROM events WHERE aggregate_id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn committed(store: &EventStore, id: Uuid, announced: Option<Announced>) {
    let out = store
        .append_announced(request(None, vec![event(id, 1)]), announced)
        .await
        .unwrap();
    assert!(matches!(out, AppendOutcome::Committed { .. }), "{out:?}");
}

#[tokio::test]
async fn an_announced_append_joins_the_open_batch_and_a_lone_one_is_not_held() {
    let db = TestDb::create().await.unwrap();
    let store = lingering_store(&db);

    // Nothing announced: the append commits at once, not after the 5 s linger.
    let lone = Uuid::now_v7();
    tokio::time::timeout(Duration::from_secs(2), committed(&store, lone, None))
        .await
        .expect("a lone append was held for the linger");

    // A second command is still deciding when the first append arrives: the writer waits
    // for it, and both commit in one transaction.
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let announced = store.announce_append();
    let early = tokio::spawn({
        let store = store.clone();
        async move { committed(&store, first, None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!early.is_finished(), "the batch did not wait for the announced append");
    committed(&store, second, Some(announced)).await;
    early.await.unwrap();
    assert_eq!(
        writing_transaction(&db, first).await,
        writing_transaction(&db, second).await
    );
    assert_ne!(
        writing_transaction(&db, lone).await,
        writing_transaction(&db, first).await
    );
}

#[tokio::test]
async fn an_announcement_given_up_releases_the_batch() {
    let db = TestDb::create().await.unwrap();
    let store = lingering_store(&db);
    let announced = store.announce_append();
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { committed(&store, Uuid::now_v7(), None).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished());
    // The announced command was refused and appends nothing: the batch commits now, not
    // at the 5 s deadline.
    drop(announced);
    tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("the batch waited for an announcement that was given up")
        .unwrap();
}

#[tokio::test]
async fn a_read_waits_only_for_other_announced_commands() {
    let db = TestDb::create().await.unwrap();
    let store = lingering_store(&db);
    let (x, y) = (Uuid::now_v7(), Uuid::now_v7());
    committed(&store, x, None).await;
    committed(&store, y, None).await;
    let read = |id: Uuid| {
        let store = store.clone();
        async move { store.read_aggregate(id, 0).await.unwrap().len() }
    };

    // Nothing announced, or only the reading command itself: answered at once.
    tokio::time::timeout(Duration::from_secs(2), read(x))
        .await
        .expect("a lone read was held");
    let own = store.announce_append();
    tokio::time::timeout(Duration::from_secs(2), read(x))
        .await
        .expect("a read was held for its own command");

    // Another command is deciding: the read waits for it, and both are answered once it
    // has read too.
    let other = store.announce_append();
    let first = tokio::spawn(read(x));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!first.is_finished(), "the read did not wait for the other command");
    let second = tokio::time::timeout(Duration::from_secs(2), read(y)).await.unwrap();
    assert_eq!(second, 1);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), first)
            .await
            .unwrap()
            .unwrap(),
        1
    );
    drop((own, other));
}
