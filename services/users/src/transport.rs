//! Kafka or RabbitMQ, chosen by the configuration. Both services use the same queue (topic)
//! names either way; only the adapter differs.

use ferry_service::ServiceConfig;
use ferry_toolkit::amqp::{self, AmqpConfig};
use ferry_toolkit::kafka::{self, KafkaConfig};
use ferry_toolkit::{Publisher, Router};

/// The configured transport.
#[derive(Debug, Clone)]
pub(crate) enum Transport {
    Kafka(KafkaConfig),
    Amqp(AmqpConfig),
}

/// A running router on either transport.
#[derive(Debug)]
pub(crate) enum RunningRouter {
    Kafka(kafka::RouterHandle),
    Amqp(amqp::RouterHandle),
}

impl Transport {
    /// RabbitMQ if an AMQP URL is configured, else Kafka.
    pub(crate) fn of(config: &ServiceConfig) -> Transport {
        match &config.amqp_url {
            Some(url) => Transport::Amqp(AmqpConfig::new(url)),
            None => Transport::Kafka(KafkaConfig::new(&config.brokers)),
        }
    }

    /// A publisher on this transport. Neither connects here: a broker that is down now is not
    /// an error.
    pub(crate) fn publisher(&self) -> Result<Publisher, ferry_toolkit::Error> {
        match self {
            Transport::Kafka(config) => Publisher::kafka(config),
            Transport::Amqp(config) => Ok(Publisher::amqp(config)),
        }
    }

    /// Runs `router`; dead letters go through `publisher`, to `<queue>.dlq`.
    pub(crate) fn start_router(
        &self,
        router: Router,
        publisher: Publisher,
    ) -> Result<RunningRouter, ferry_toolkit::Error> {
        Ok(match self {
            Transport::Kafka(config) => {
                RunningRouter::Kafka(kafka::start_router(router, config, publisher)?)
            }
            Transport::Amqp(config) => {
                RunningRouter::Amqp(amqp::start_router(router, config, publisher)?)
            }
        })
    }
}

impl RunningRouter {
    /// Stops gracefully: finishes and acknowledges in-flight messages.
    pub(crate) async fn shutdown(self) {
        match self {
            RunningRouter::Kafka(router) => router.shutdown().await,
            RunningRouter::Amqp(router) => router.shutdown().await,
        }
    }
}
