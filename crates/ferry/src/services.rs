//! The reference services the binary can run: `ferry run <service>` starts one, `ferry up` all.
//!
//! Each service crate exposes `start(ServiceConfig, CancellationToken) -> ServiceHandle`; this
//! table names them, with their default ports, so the command line and `ferry up` share one list.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
pub use dashboard::Upstream;
use ferry_service::{HttpLimits, ServiceConfig, ServiceHandle};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

/// A service `ferry run` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    /// Courses producer: POST/PUT/DELETE /api/v1/courses (4000).
    CoursesProducer,
    /// Courses consumer: GET /api/v1/courses (3000).
    CoursesConsumer,
    /// Customers: credit limits and reservations (32001).
    Customers,
    /// Orders: the order saga (32002).
    Orders,
    /// Users producer: sign-up requests (8081).
    UsersProducer,
    /// Users consumer: users and task outcomes (8080).
    UsersConsumer,
    /// Posts command side: event-sourced posts (5010).
    PostsCommand,
    /// Posts query side: the read model (5011).
    PostsQuery,
    /// Invoice generator: gap-free invoice numbers (8001).
    InvoiceGenerator,
    /// Score calculator: scores from invoice histories (8002).
    ScoreCalculator,
    /// Dashboard and gateway: the web page and one origin for every API (8000).
    Dashboard,
}

/// How a service starts: its configuration, the other services' addresses (only the
/// dashboard uses them), the shutdown token.
type Start = fn(
    ServiceConfig,
    Vec<Upstream>,
    CancellationToken,
) -> BoxFuture<'static, anyhow::Result<ServiceHandle>>;

impl Service {
    /// Every service, in the order `ferry up` starts and lists them. The dashboard comes last:
    /// it is given the addresses of all the others.
    pub const ALL: [Service; 11] = [
        Service::CoursesProducer,
        Service::CoursesConsumer,
        Service::Customers,
        Service::Orders,
        Service::UsersProducer,
        Service::UsersConsumer,
        Service::PostsCommand,
        Service::PostsQuery,
        Service::InvoiceGenerator,
        Service::ScoreCalculator,
        Service::Dashboard,
    ];

    /// The port it listens on unless told otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            Service::CoursesProducer => courses::PRODUCER_PORT,
            Service::CoursesConsumer => courses::CONSUMER_PORT,
            Service::Customers => customers::PORT,
            Service::Orders => orders::PORT,
            Service::UsersProducer => users::PRODUCER_PORT,
            Service::UsersConsumer => users::CONSUMER_PORT,
            Service::PostsCommand => posts::COMMAND_PORT,
            Service::PostsQuery => posts::QUERY_PORT,
            Service::InvoiceGenerator => invoices::PORT,
            Service::ScoreCalculator => scores::PORT,
            Service::Dashboard => dashboard::PORT,
        }
    }

    /// Its name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Service::CoursesProducer => "courses-producer",
            Service::CoursesConsumer => "courses-consumer",
            Service::Customers => "customers",
            Service::Orders => "orders",
            Service::UsersProducer => "users-producer",
            Service::UsersConsumer => "users-consumer",
            Service::PostsCommand => "posts-command",
            Service::PostsQuery => "posts-query",
            Service::InvoiceGenerator => "invoice-generator",
            Service::ScoreCalculator => "score-calculator",
            Service::Dashboard => "dashboard",
        }
    }

    /// A path worth opening first.
    pub fn example_path(self) -> &'static str {
        match self {
            Service::CoursesProducer => "/openapi.json",
            Service::CoursesConsumer => "/api/v1/courses",
            Service::Customers => "/openapi.json",
            Service::Orders => "/openapi.json",
            Service::UsersProducer => "/",
            Service::UsersConsumer => "/users",
            Service::PostsCommand => "/openapi.json",
            Service::PostsQuery => "/api/v1/PostLookup",
            Service::InvoiceGenerator => "/api/invoices",
            Service::ScoreCalculator => "/api/scores",
            Service::Dashboard => "/",
        }
    }

    fn starter(self) -> Start {
        match self {
            Service::CoursesProducer => {
                |c, _, s| Box::pin(async move { Ok(courses::start_producer(c, s).await?) })
            }
            Service::CoursesConsumer => {
                |c, _, s| Box::pin(async move { Ok(courses::start_consumer(c, s).await?) })
            }
            Service::Customers => {
                |c, _, s| Box::pin(async move { Ok(customers::start(c, s).await?) })
            }
            Service::Orders => |c, _, s| Box::pin(async move { Ok(orders::start(c, s).await?) }),
            Service::UsersProducer => {
                |c, _, s| Box::pin(async move { Ok(users::start_producer(c, s).await?) })
            }
            Service::UsersConsumer => {
                |c, _, s| Box::pin(async move { Ok(users::start_consumer(c, s).await?) })
            }
            Service::PostsCommand => {
                |c, _, s| Box::pin(async move { Ok(posts::start_command(c, s).await?) })
            }
            Service::PostsQuery => {
                |c, _, s| Box::pin(async move { Ok(posts::start_query(c, s).await?) })
            }
            Service::InvoiceGenerator => {
                |c, _, s| Box::pin(async move { Ok(invoices::start(c, s).await?) })
            }
            Service::ScoreCalculator => {
                |c, _, s| Box::pin(async move { Ok(scores::start(c, s).await?) })
            }
            Service::Dashboard => {
                |c, u, s| Box::pin(async move { Ok(dashboard::start(c, u, s).await?) })
            }
        }
    }

    /// Start it; the dashboard forwards to and watches `upstreams`.
    pub async fn start(
        self,
        config: ServiceConfig,
        upstreams: &[Upstream],
        shutdown: CancellationToken,
    ) -> anyhow::Result<ServiceHandle> {
        (self.starter())(config, upstreams.to_vec(), shutdown)
            .await
            .with_context(|| format!("cannot start {}", self.name()))
    }
}

/// `ferry run <service>`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Which service.
    #[arg(value_enum)]
    service: Service,
    /// Kafka bootstrap servers (the built-in broker by default, or any Kafka cluster).
    #[arg(long, env = "FERRY_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Database URL (postgres://...); by default a SQLite file under --data.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// HTTP port (default: the service's own).
    #[arg(long)]
    port: Option<u16>,
    /// Where SQLite files go.
    #[arg(long, default_value = "./ferry-data")]
    data: PathBuf,
    /// amqp://... to run a service that supports it (users) over RabbitMQ instead of Kafka.
    #[arg(long)]
    transport: Option<String>,
    /// Where another service runs, as NAME=URL (repeatable): the dashboard watches and forwards
    /// to them, posts-query reads posts-command's event feed. Those not given are expected on
    /// 127.0.0.1 at their default ports.
    #[arg(long = "upstream", value_parser = parse_upstream)]
    upstreams: Vec<Upstream>,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    grace: crate::serve::GraceArgs,
}

/// Every service's HTTP connection limits (`ferry run` and `ferry up`).
#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    /// HTTP connections each service serves at once; more wait until one closes.
    #[arg(long, default_value_t = HttpLimits::default().max_connections as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    http_max_connections: u32,
    /// Close an HTTP connection that sends no request for this long, in ms.
    #[arg(long, default_value_t = millis(HttpLimits::default().idle_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    http_idle_timeout_ms: u64,
    /// Close an HTTP connection whose request line and headers take longer than this to arrive, in ms.
    #[arg(long, default_value_t = millis(HttpLimits::default().header_read_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    http_header_read_timeout_ms: u64,
}

impl HttpArgs {
    /// The limits these flags give.
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: self.http_max_connections as usize,
            idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
            header_read_timeout: Duration::from_millis(self.http_header_read_timeout_ms),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let (name, url) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=URL, got {s:?}"))?;
    if Service::from_str(name, true).is_err() {
        return Err(format!("no service called {name:?}"));
    }
    Ok(Upstream::new(name, url))
}

/// Every service but the dashboard at its default port on 127.0.0.1, except those in `given`.
fn default_upstreams(given: Vec<Upstream>) -> Vec<Upstream> {
    let mut upstreams = given;
    for service in Service::ALL {
        if service != Service::Dashboard && !upstreams.iter().any(|u| u.name == service.name()) {
            upstreams.push(Upstream::new(
                service.name(),
                format!("http://127.0.0.1:{}", service.default_port()),
            ));
        }
    }
    upstreams
}

/// Run one service until Ctrl-C or SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = ServiceConfig::new(
        args.brokers,
        &args.data,
        args.port.unwrap_or(args.service.default_port()),
    );
    config.database_url = args.database_url;
    config.amqp_url = args.transport.filter(|t| t.starts_with("amqp"));
    config.http = args.http.limits();
    crate::serve::data_dir(&args.data)?;
    let shutdown = CancellationToken::new();
    let upstreams = default_upstreams(args.upstreams);
    config
        .peers
        .extend(upstreams.iter().map(|u| (u.name.clone(), u.url.clone())));
    let handle = args
        .service
        .start(config, &upstreams, shutdown.clone())
        .await
        .map_err(|e| crate::serve::port_hint(e, "Pick another with --port (0 picks a free one)"))?;
    println!("{} listening on http://{}", handle.name, handle.addr);
    crate::serve::shutdown_signal().await?;
    if !crate::serve::stop_services(args.grace.grace(), &shutdown, vec![handle]).await? {
        std::process::exit(1);
    }
    Ok(())
}
