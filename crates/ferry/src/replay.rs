//! `ferry replay posts`: rebuild the posts read model from the event store, with a progress bar.
//!
//! It opens the two databases where `ferry up` keeps them (`ServiceConfig::database`: SQLite
//! files under `--data`, or schemas of `--database-url`) and runs `posts::rebuild_read_model`,
//! the code path of the query service's `RestoreReadDb`. So it is safe to run twice and while
//! the services run: every event is applied with the read model's per-post version check.
//! The bar goes to stderr (and only to a terminal); the summary line to stdout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use ferry_service::ServiceConfig;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Subcommand)]
pub enum ReplayCommand {
    /// Rebuild the posts read model (posts-query) from the posts event store (posts-command).
    Posts(PostsArgs),
}

#[derive(Debug, Args)]
pub struct PostsArgs {
    /// Where `ferry up` keeps its data (the SQLite files).
    #[arg(long, default_value = "./ferry-data")]
    data: PathBuf,
    /// PostgreSQL URL the services use, instead of SQLite files under --data.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Empty the read model first and rebuild it from scratch (default: add only what it lacks).
    #[arg(long)]
    reset: bool,
    /// Events applied per transaction.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
}

pub async fn run(command: ReplayCommand) -> anyhow::Result<()> {
    match command {
        ReplayCommand::Posts(args) => posts(args).await,
    }
}

async fn posts(args: PostsArgs) -> anyhow::Result<()> {
    let mut config = ServiceConfig::new("", &args.data, 0);
    config.database_url = args.database_url.filter(|url| !url.is_empty());
    if config.database_url.is_none() {
        // Opening a SQLite file creates it: check first, so a wrong --data is an error rather
        // than an empty event store.
        let file = args.data.join(format!("{}.db", posts::COMMAND_SERVICE));
        anyhow::ensure!(
            file.exists(),
            "no posts event store at {} (run `ferry up` first, or pass --data or --database-url)",
            file.display()
        );
    }
    let store = config
        .database(posts::COMMAND_SERVICE)
        .await
        .context("cannot open the posts event store")?;
    let source = posts::EventSource::event_store(store)
        .await
        .context("cannot open the posts event store")?;
    let read_model = config
        .database(posts::QUERY_SERVICE)
        .await
        .context("cannot open the posts read model")?;

    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replaying posts [{bar:40}] {pos}/{len} events ({per_sec}, {eta} left)",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    let options = posts::RebuildOptions {
        reset: args.reset,
        batch_size: usize::try_from(args.batch).unwrap_or(usize::MAX),
        ..posts::RebuildOptions::default()
    };
    let started = Instant::now();
    let done = posts::rebuild_read_model(&source, &read_model, &options, |p| {
        bar.set_length(p.total);
        bar.set_position(p.read);
    })
    .await
    .context("the rebuild failed (the read model is consistent; run it again to finish)")?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "replayed {} event(s) into the posts read model in {seconds:.1} s ({:.0} events/s): {} applied, {} already there{}",
        done.read,
        done.read as f64 / seconds.max(1e-9),
        done.applied,
        done.skipped,
        if args.reset {
            " (read model emptied first)"
        } else {
            ""
        }
    );
    Ok(())
}
