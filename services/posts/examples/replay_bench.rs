//! Read-model rebuild speed: `posts::rebuild_read_model` (what `RestoreReadDb` and
//! `ferry replay posts` run) over an event store of `--events` post events.
//!
//! ```text
//! cargo run --release -p posts --example replay_bench                      # SQLite in a temp dir
//! cargo run --release -p posts --example replay_bench -- --events 100000 --per-append 1
//! cargo run --release -p posts --example replay_bench -- --database-url postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! The store gets `--posts` posts with likes spread over them, appended round-robin over the
//! posts, `--per-append` events of one post per transaction (not timed): 100 gives long runs of
//! one post's events in the global order, 1 interleaves the posts event by event, the worst
//! case for the rebuild, which checks versions once per run of a post. Then three rebuilds from the store itself (as `ferry replay posts`
//! does): into an empty read model (every event applied), again (every event already there),
//! and with a reset (emptied, then every event applied). On PostgreSQL the run uses fresh
//! schemas and drops them afterwards.

use std::time::Instant;

use anyhow::{Context, bail};
use ferry_es::{EventStore, Metadata};
use ferry_toolkit::sql::Database;
use posts::{EventSource, RebuildOptions, rebuild_read_model};
use posts_domain::{PostCreated, PostEvent, PostLiked};
use uuid::Uuid;

struct Args {
    events: u64,
    posts: u64,
    per_append: u64,
    database_url: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        events: 1_000_000,
        posts: 1_000,
        per_append: 100,
        database_url: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--events" => args.events = value.parse()?,
            "--posts" => args.posts = value.parse()?,
            "--per-append" => args.per_append = value.parse()?,
            "--database-url" => args.database_url = Some(value),
            other => bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(
        args.posts >= 1 && args.events >= args.posts && args.per_append >= 1,
        "need at least one post, one event per post, and one event per append"
    );
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let dir = tempfile::tempdir()?;
    let suffix = Uuid::now_v7().simple().to_string();
    let (store_db, read_db, schemas) = match &args.database_url {
        Some(url) => {
            let (s, r) = (format!("bench_es_{suffix}"), format!("bench_rm_{suffix}"));
            (
                Database::connect_in_schema(url, &s).await?,
                Database::connect_in_schema(url, &r).await?,
                vec![s, r],
            )
        }
        None => (
            Database::connect(&Database::sqlite_url(dir.path(), "posts-command")).await?,
            Database::connect(&Database::sqlite_url(dir.path(), "posts-query")).await?,
            Vec::new(),
        ),
    };
    let backend = if store_db.is_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    ferry_es::migrate(&store_db).await?;
    seed(&store_db, &args).await?;
    let source = EventSource::event_store(store_db.clone()).await?;

    println!(
        "| run ({backend}, {} events, {} posts, {} per append) | events/s |",
        args.events, args.posts, args.per_append
    );
    println!("| --- | --- |");
    for (name, reset) in [
        ("into an empty read model", false),
        ("again (all already there)", false),
        ("with reset", true),
    ] {
        let options = RebuildOptions {
            reset,
            ..RebuildOptions::default()
        };
        let started = Instant::now();
        let done = rebuild_read_model(&source, &read_db, &options, |_| {}).await?;
        let rate = done.read as f64 / started.elapsed().as_secs_f64();
        println!(
            "| {name}: {} applied, {} skipped | {rate:.0} |",
            done.applied, done.skipped
        );
    }

    if let Some(url) = &args.database_url {
        store_db.close().await;
        read_db.close().await;
        let admin = Database::connect(url).await?;
        for schema in schemas {
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(admin.pool())
                .await?;
        }
        admin.close().await;
    }
    Ok(())
}

/// `posts` posts, then likes up to `events` events; round-robin over the posts, `per_append`
/// events of one post per append.
async fn seed(db: &Database, args: &Args) -> anyhow::Result<()> {
    let store = EventStore::new(db.clone());
    let started = Instant::now();
    let mut posts: Vec<(Uuid, u64, i64)> = (0..args.posts)
        .map(|i| {
            let count = args.events / args.posts + u64::from(i < args.events % args.posts);
            (Uuid::now_v7(), count, 0)
        })
        .collect();
    while posts.iter().any(|(_, left, _)| *left > 0) {
        for (i, (id, left, version)) in posts.iter_mut().enumerate() {
            let n = (*left).min(args.per_append);
            if n == 0 {
                continue;
            }
            let batch: Vec<PostEvent> = (0..n)
                .map(|k| {
                    if *version == 0 && k == 0 {
                        PostCreated {
                            post_id: *id,
                            author: format!("author{i}"),
                            message: "hello".into(),
                            date_posted: 1_700_000_000_000,
                        }
                        .into()
                    } else {
                        PostLiked { post_id: *id }.into()
                    }
                })
                .collect();
            store
                .append(
                    &id.to_string(),
                    "PostAggregate",
                    *version,
                    batch,
                    &Metadata::default(),
                )
                .await?;
            *version += i64::try_from(n)?;
            *left -= n;
        }
    }
    eprintln!(
        "seeded {} events in {:.1} s",
        args.events,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
