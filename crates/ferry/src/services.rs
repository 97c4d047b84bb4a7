//! The reference services the binary can run: `ferry run <service>` starts one, `ferry up` all.
//!
//! Each service crate exposes `start(ServiceConfig, CancellationToken) -> ServiceHandle`; this
//! table names them, with their default ports, so the command line and `ferry up` share one list.

use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;
use ferry_service::{ServiceConfig, ServiceHandle};
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
}

type Start =
    fn(ServiceConfig, CancellationToken) -> BoxFuture<'static, anyhow::Result<ServiceHandle>>;

impl Service {
    /// Every service, in the order `ferry up` starts and lists them.
    pub const ALL: [Service; 8] = [
        Service::CoursesProducer,
        Service::CoursesConsumer,
        Service::Customers,
        Service::Orders,
        Service::UsersProducer,
        Service::UsersConsumer,
        Service::PostsCommand,
        Service::PostsQuery,
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
        }
    }

    fn starter(self) -> Start {
        match self {
            Service::CoursesProducer => {
                |c, s| Box::pin(async move { Ok(courses::start_producer(c, s).await?) })
            }
            Service::CoursesConsumer => {
                |c, s| Box::pin(async move { Ok(courses::start_consumer(c, s).await?) })
            }
            Service::Customers => |c, s| Box::pin(async move { Ok(customers::start(c, s).await?) }),
            Service::Orders => |c, s| Box::pin(async move { Ok(orders::start(c, s).await?) }),
            Service::UsersProducer => {
                |c, s| Box::pin(async move { Ok(users::start_producer(c, s).await?) })
            }
            Service::UsersConsumer => {
                |c, s| Box::pin(async move { Ok(users::start_consumer(c, s).await?) })
            }
            Service::PostsCommand => {
                |c, s| Box::pin(async move { Ok(posts::start_command(c, s).await?) })
            }
            Service::PostsQuery => {
                |c, s| Box::pin(async move { Ok(posts::start_query(c, s).await?) })
            }
        }
    }

    /// Start it.
    pub async fn start(
        self,
        config: ServiceConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<ServiceHandle> {
        (self.starter())(config, shutdown)
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
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create {}", args.data.display()))?;
    let shutdown = CancellationToken::new();
    let handle = args.service.start(config, shutdown.clone()).await?;
    println!("{} listening on http://{}", handle.name, handle.addr);
    crate::serve::shutdown_signal().await?;
    shutdown.cancel();
    let _ = handle.task.await;
    Ok(())
}
