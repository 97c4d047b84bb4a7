//! `ferry broker` and `ferry up`: run the built-in broker in this process until Ctrl-C or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgAction, Args};
use ferry_broker::{BrokerConfig, BrokerHandle};
use ferry_service::ServiceConfig;

use crate::services::{HttpArgs, Service, Upstream};

/// The single source of the broker's defaults, shown by `--help`.
fn defaults() -> BrokerConfig {
    BrokerConfig::default()
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Address to listen on; port 0 picks a free port (the "listening on" line tells which).
    #[arg(long, default_value_t = defaults().listen)]
    listen: SocketAddr,
    /// Directory holding the topics' logs; created if missing, recovered if it exists.
    #[arg(long, default_value_os_t = defaults().data_dir)]
    data: PathBuf,
    /// Create a topic the first time a client produces to it or asks for it.
    #[arg(long, default_value_t = defaults().auto_create_topics, action = ArgAction::Set,
          value_name = "true|false", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    auto_create_topics: bool,
    /// Partition count of auto-created topics.
    #[arg(long, default_value_t = defaults().default_partitions,
          value_parser = clap::value_parser!(u32).range(1..))]
    default_partitions: u32,
    /// Largest request accepted, in bytes; a larger one closes the connection.
    #[arg(long, default_value_t = defaults().max_request_bytes)]
    max_request_bytes: usize,
    /// Host name clients are told to connect to (default: the listen address, or 127.0.0.1 for 0.0.0.0).
    #[arg(long)]
    advertised_host: Option<String>,
    #[command(flatten)]
    connections: ConnectionArgs,
    /// How often the log cleaner looks for compacted partitions to clean, in ms (Kafka's
    /// `log.cleaner.backoff.ms`).
    #[arg(long, default_value_t = defaults().cleaner_check_interval.as_millis() as u64)]
    log_cleaner_backoff_ms: u64,
    /// Session timeout of consumer-protocol (KIP-848) group members, in ms: the broker removes a
    /// member that has not heartbeated for this long (Kafka's group.consumer.session.timeout.ms).
    #[arg(long, default_value_t = millis(defaults().consumer_session_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    group_consumer_session_timeout_ms: u64,
    /// Heartbeat interval the broker gives consumer-protocol members, in ms (Kafka's
    /// group.consumer.heartbeat.interval.ms); a member learns of a new assignment at its next one.
    #[arg(long, default_value_t = millis(defaults().consumer_heartbeat_interval),
          value_parser = clap::value_parser!(u64).range(1..))]
    group_consumer_heartbeat_interval_ms: u64,
    /// Serve the broker's Prometheus `/metrics` (and `/health`) on this address; port 0 picks a
    /// free one (the "metrics on" line tells which).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

impl BrokerArgs {
    fn into_config(self) -> BrokerConfig {
        self.connections.apply(BrokerConfig {
            listen: self.listen,
            advertised_host: self.advertised_host,
            data_dir: self.data,
            auto_create_topics: self.auto_create_topics,
            default_partitions: self.default_partitions,
            max_request_bytes: self.max_request_bytes,
            cleaner_check_interval: Duration::from_millis(self.log_cleaner_backoff_ms),
            consumer_session_timeout: Duration::from_millis(self.group_consumer_session_timeout_ms),
            consumer_heartbeat_interval: Duration::from_millis(
                self.group_consumer_heartbeat_interval_ms,
            ),
            ..defaults()
        })
    }
}

/// The broker's connection limits, named after Kafka's settings (`ferry broker` and `ferry up`).
#[derive(Debug, Args)]
struct ConnectionArgs {
    /// Broker: close a connection with no request for this long, in ms (Kafka's connections.max.idle.ms).
    #[arg(long, default_value_t = millis(defaults().connections_max_idle),
          value_parser = clap::value_parser!(u64).range(1..))]
    connections_max_idle_ms: u64,
    /// Broker: close a connection whose request frame is not complete this long after its first byte, in ms.
    #[arg(long, default_value_t = millis(defaults().frame_read_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    frame_read_timeout_ms: u64,
    /// Broker: connections served at once (Kafka's max.connections); more are closed at once.
    #[arg(long, default_value_t = defaults().max_connections as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
}

impl ConnectionArgs {
    fn apply(&self, config: BrokerConfig) -> BrokerConfig {
        BrokerConfig {
            connections_max_idle: Duration::from_millis(self.connections_max_idle_ms),
            frame_read_timeout: Duration::from_millis(self.frame_read_timeout_ms),
            max_connections: self.max_connections as usize,
            ..config
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Directory for everything ferry keeps: the broker's log under <DATA>/broker, one SQLite file per service.
    #[arg(long, default_value = "./ferry-data")]
    data: PathBuf,
    /// Use this Kafka-protocol cluster instead of starting the built-in broker.
    #[arg(long, env = "FERRY_BROKERS")]
    brokers: Option<String>,
    /// PostgreSQL URL for every service's tables, instead of SQLite files under --data.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Listen on free ports instead of the defaults (a second copy beside a running one, tests);
    /// the table printed at start says which.
    #[arg(long)]
    free_ports: bool,
    #[command(flatten)]
    connections: ConnectionArgs,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    grace: GraceArgs,
}

/// How long Ctrl-C waits (`ferry up`, `ferry run`).
#[derive(Debug, Args)]
pub struct GraceArgs {
    /// Seconds Ctrl-C (or SIGTERM) waits for requests, messages and publishes in flight before
    /// exiting anyway; committed data is kept (unsent outbox rows are sent at the next start).
    /// A second Ctrl-C exits at once.
    #[arg(long = "shutdown-grace", value_name = "SECS", default_value_t = 5.0)]
    shutdown_grace: f64,
}

impl GraceArgs {
    pub fn grace(&self) -> Duration {
        Duration::try_from_secs_f64(self.shutdown_grace).unwrap_or(Duration::ZERO)
    }
}

/// Cancels `shutdown` and waits for `services` to stop, at most `grace`: says what it waits
/// for after a second, and what was still in flight when the grace period ends. A second
/// Ctrl-C exits the process at once. Returns whether every service stopped in time.
///
/// Cutting a stop short loses nothing committed: a service's database has every accepted
/// command and its unsent outbox rows (the relay sends them at the next start), a consumer
/// whose offset was not committed gets its messages again (handlers are idempotent through
/// the inbox), and the built-in broker is still shut down cleanly by the caller.
pub async fn stop_services(
    grace: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
    services: Vec<ferry_service::ServiceHandle>,
) -> anyhow::Result<bool> {
    let out = |line: String| {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    };
    out(format!(
        "stopping: waiting up to {:.1} s for what is in flight; press Ctrl-C again to exit at once",
        grace.as_secs_f64()
    ));
    shutdown.cancel();
    let started = tokio::time::Instant::now();
    let deadline = started + grace;
    let mut said = false;
    let mut services = services;
    let in_flight = |services: &[ferry_service::ServiceHandle]| {
        services
            .iter()
            .map(|s| format!("{} ({})", s.name, s.stage.get()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let second = shutdown_signal();
    tokio::pin!(second);
    loop {
        services.retain(|s| !s.task.is_finished());
        if services.is_empty() {
            return Ok(true);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            out(format!(
                "grace period of {:.1} s is over; exiting with these still in flight: {}. \
                 Nothing committed is lost: unsent outbox rows are sent at the next start.",
                grace.as_secs_f64(),
                in_flight(&services)
            ));
            return Ok(false);
        }
        if !said && now >= started + Duration::from_secs(1) {
            said = true;
            out(format!("waiting for: {}", in_flight(&services)));
        }
        tokio::select! {
            _ = &mut second => {
                out(format!("second Ctrl-C: exiting now; in flight: {}", in_flight(&services)));
                std::process::exit(130);
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

pub async fn broker(args: BrokerArgs) -> anyhow::Result<()> {
    let metrics_listen = args.metrics_listen;
    let handle = start(args.into_config()).await?;
    let stop_ops = tokio_util::sync::CancellationToken::new();
    let ops = match metrics_listen {
        Some(addr) => {
            let mut config = ServiceConfig::new("", "", addr.port());
            config.host = addr.ip();
            let openapi = utoipa::openapi::OpenApiBuilder::new().build();
            let ops = ferry_service::serve(
                "broker",
                &config,
                axum::Router::new(),
                ferry_toolkit::ops::Health::new(),
                openapi,
                stop_ops.clone(),
            )
            .await
            .context("cannot serve the broker's metrics")?;
            Some(ops)
        }
        None => None,
    };
    // Tests and scripts read this exact line to learn the port when listening on port 0.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ferry broker listening on {}", handle.local_addr())?;
    if let Some(ops) = &ops {
        writeln!(
            stdout,
            "ferry broker metrics on http://{}/metrics",
            ops.addr
        )?;
    }
    stdout.flush()?;
    drop(stdout);
    let stopped = run_until_signal(handle).await;
    stop_ops.cancel();
    stopped
}

/// Where `ferry up` serves the built-in broker's `/metrics` (the Prometheus Kafka exporter's
/// customary port).
const BROKER_METRICS_PORT: u16 = 9308;

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let broker_ops_stop = tokio_util::sync::CancellationToken::new();
    data_dir(&args.data)?;
    let broker = match &args.brokers {
        Some(_) => None,
        None => Some(
            start_hinted(args.connections.apply(BrokerConfig {
                data_dir: args.data.join("broker"),
                listen: if args.free_ports {
                    SocketAddr::from(([127, 0, 0, 1], 0))
                } else {
                    defaults().listen
                },
                ..defaults()
            }))
            .await?,
        ),
    };
    // The built-in broker's own /metrics (and /health), on its own port: its series carry
    // `service="broker"` and no service's /metrics shows them.
    let broker_ops = match &broker {
        Some(_) => {
            let port = if args.free_ports {
                0
            } else {
                BROKER_METRICS_PORT
            };
            let config = ServiceConfig::new("", &args.data, port);
            let openapi = utoipa::openapi::OpenApiBuilder::new().build();
            Some(
                ferry_service::serve(
                    "broker",
                    &config,
                    axum::Router::new(),
                    ferry_toolkit::ops::Health::new(),
                    openapi,
                    broker_ops_stop.clone(),
                )
                .await
                .map_err(|e| {
                    port_hint(
                        anyhow::Error::new(e).context("cannot serve the broker's metrics"),
                        "Stop what holds it, or run `ferry up --free-ports` to put everything on free ports",
                    )
                })?,
            )
        }
        None => None,
    };
    let brokers = args.brokers.clone().unwrap_or_else(|| {
        broker
            .as_ref()
            .map(|b| b.bootstrap_servers())
            .unwrap_or_default()
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut services = Vec::new();
    let mut upstreams = Vec::new();
    for service in Service::ALL {
        let port = if args.free_ports {
            0
        } else {
            service.default_port()
        };
        let mut config = ServiceConfig::new(&brokers, &args.data, port);
        config.database_url = args.database_url.clone();
        config.http = args.http.limits();
        // Services started before this one, by name (posts-query reads posts-command's feed).
        config.peers.extend(
            upstreams
                .iter()
                .map(|u: &Upstream| (u.name.clone(), u.url.clone())),
        );
        let handle = service
            .start(config, &upstreams, shutdown.clone())
            .await
            .map_err(|e| port_hint(e, "Stop what holds it, or run `ferry up --free-ports` to put every service on a free port"))?;
        upstreams.push(Upstream::new(
            service.name(),
            format!("http://{}", handle.addr),
        ));
        services.push((service, handle));
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "ferry is up in {:.1} s (data in {}); press Ctrl-C to stop.",
        started.elapsed().as_secs_f64(),
        args.data.display()
    )?;
    if let Some((_, dashboard)) = services.iter().find(|(s, _)| *s == Service::Dashboard) {
        writeln!(stdout, "Open the dashboard: http://{}/", dashboard.addr)?;
    }
    writeln!(stdout)?;
    writeln!(stdout, "  {:<18} {:<24} TRY", "SERVICE", "ADDRESS")?;
    let broker_note = match &broker_ops {
        Some(ops) => format!(
            "built-in Kafka-protocol broker, metrics at http://{}/metrics",
            ops.addr
        ),
        None => "external Kafka cluster".to_owned(),
    };
    writeln!(stdout, "  {:<18} {:<24} {}", "broker", brokers, broker_note)?;
    for (service, handle) in &services {
        writeln!(
            stdout,
            "  {:<18} {:<24} http://{}{}",
            service.name(),
            handle.addr.to_string(),
            handle.addr,
            service.example_path()
        )?;
    }
    writeln!(stdout)?;
    stdout.flush()?;
    drop(stdout);
    // The services start without a broker (their outboxes keep what they accept), but a
    // person should know at once that nothing will flow, and when that changes.
    tokio::spawn(watch_broker(brokers.clone(), shutdown.clone()));
    shutdown_signal().await?;
    tracing::info!("shutting down");
    let handles = services.into_iter().map(|(_, handle)| handle).collect();
    let all_stopped = stop_services(args.grace.grace(), &shutdown, handles).await?;
    broker_ops_stop.cancel();
    if let Some(broker) = broker {
        broker.shutdown().await.context("broker shutdown")?;
    }
    tracing::info!("stopped");
    if !all_stopped {
        // The remaining tasks may sit in librdkafka's blocking calls; do not wait for them.
        std::process::exit(1);
    }
    Ok(())
}

/// Says on the console when the broker cannot be reached, and when it can again.
async fn watch_broker(brokers: String, stop: tokio_util::sync::CancellationToken) {
    let mut reachable = true;
    loop {
        let now = ferry_service::ready::broker_reachable(&brokers).await;
        match (&now, reachable) {
            (Err(why), true) => {
                println!(
                    "warning: {why}. Services are not ready until it answers (`ferry broker` \
                     starts one; `ferry up` without --brokers runs the built-in one)."
                );
            }
            (Ok(()), false) => println!("the broker at {brokers} answers again"),
            _ => {}
        }
        reachable = now.is_ok();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(ferry_service::ready::PROBE_EVERY) => {}
        }
    }
}

/// Creates the `--data` directory, saying so plainly when the path is a file.
pub fn data_dir(path: &std::path::Path) -> anyhow::Result<()> {
    if path.exists() && !path.is_dir() {
        anyhow::bail!(
            "--data {} is a file, not a directory: point --data at a directory (it is created if missing)",
            path.display()
        );
    }
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))
}

/// Adds `hint` to an error caused by a port in use.
pub fn port_hint(error: impl Into<anyhow::Error>, hint: &str) -> anyhow::Error {
    let error = error.into();
    let taken = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
    });
    if taken {
        anyhow::anyhow!("{}. {hint}", crate::one_line(&error))
    } else {
        error
    }
}

/// [`start`] for `ferry up`: a taken broker port suggests `--free-ports`.
async fn start_hinted(config: BrokerConfig) -> anyhow::Result<BrokerHandle> {
    start(config)
        .await
        .map_err(|e| port_hint(e, "Stop what holds it, or run `ferry up --free-ports` to put the broker and every service on free ports"))
}

async fn start(config: BrokerConfig) -> anyhow::Result<BrokerHandle> {
    let data_dir = config.data_dir.clone();
    ferry_broker::start(config)
        .await
        .with_context(|| format!("cannot start the broker (data in {})", data_dir.display()))
}

async fn run_until_signal(handle: BrokerHandle) -> anyhow::Result<()> {
    shutdown_signal().await?;
    tracing::info!("shutting down");
    handle.shutdown().await.context("broker shutdown")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, the two ways a terminal or a supervisor asks us to stop.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}
