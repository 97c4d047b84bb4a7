//! `toolkit-eos --brokers HOST:PORT --group G --input T --output T --transactional-id ID`;
//! Ctrl-C (or SIGTERM) stops it gracefully. It exits non-zero if the router stops by itself
//! (fenced by another instance with the same transactional id).

use ferry_toolkit::kafka::KafkaConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut brokers = "127.0.0.1:9092".to_owned();
    let mut settings = toolkit_eos::Settings {
        group: "pricing".to_owned(),
        input: "orders".to_owned(),
        output: "orders-priced".to_owned(),
        transactional_id: "pricing-0".to_owned(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--brokers" => brokers = value()?,
            "--group" => settings.group = value()?,
            "--input" => settings.input = value()?,
            "--output" => settings.output = value()?,
            "--transactional-id" => settings.transactional_id = value()?,
            other => anyhow::bail!(
                "unknown argument {other:?}; usage: toolkit-eos [--brokers HOST:PORT] [--group G] [--input T] [--output T] [--transactional-id ID]"
            ),
        }
    }
    let kafka = KafkaConfig::new(brokers)
        .set_consumer("session.timeout.ms", "6000")
        .set_consumer("heartbeat.interval.ms", "500");
    let router = toolkit_eos::start(&settings, &kafka)?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut check = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = check.tick() => {
                if let Some(failure) = router.failure() {
                    let failure = failure.to_owned();
                    router.shutdown().await;
                    anyhow::bail!("router stopped: {failure}");
                }
            }
        }
    }
    router.shutdown().await;
    Ok(())
}
