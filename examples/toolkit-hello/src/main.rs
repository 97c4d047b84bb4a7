//! `toolkit-hello [--brokers 127.0.0.1:9092] [--listen 127.0.0.1:8080]`; Ctrl-C stops it
//! gracefully.

use ferry_toolkit::kafka::KafkaConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut brokers = "127.0.0.1:9092".to_owned();
    let mut listen = "127.0.0.1:8080".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--brokers" => {
                brokers = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--brokers needs a value"))?
            }
            "--listen" => {
                listen = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--listen needs a value"))?
            }
            other => anyhow::bail!(
                "unknown argument {other:?}; usage: toolkit-hello [--brokers HOST:PORT] [--listen ADDR]"
            ),
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    toolkit_hello::run(listener, KafkaConfig::new(brokers), shutdown).await
}
