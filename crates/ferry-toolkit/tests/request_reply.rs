//! Request/reply against the real broker.

mod common;

use std::time::Duration;

use common::*;
use ferry_toolkit::kafka::{start_requester, start_router};
use ferry_toolkit::ops::metrics::{self, REPLIES_DROPPED};
use ferry_toolkit::{
    Envelope, HandlerError, Message, MessageContext, Publisher, RequestError, Router, handler_fn,
};
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Question {
    id: String,
    text: String,
}

impl Message for Question {
    const TYPE: &'static str = "test.question";
    fn key(&self) -> String {
        self.id.clone()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Answer {
    id: String,
    text: String,
}

impl Message for Answer {
    const TYPE: &'static str = "test.answer";
    fn key(&self) -> String {
        self.id.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_get_their_own_replies() -> anyhow::Result<()> {
    let broker = TestBroker::start();
    let config = kafka(&broker.bootstrap());
    let publisher = Publisher::kafka(&config)?;
    let questions = unique("questions");
    create_topic(&broker.bootstrap(), &questions, 2).await;

    // The replier is an ordinary handler.
    let replier = Router::new(unique("answerer"))
        .subscribe(&questions)
        .handle(handler_fn(|q: Question, ctx: MessageContext| async move {
            ctx.reply(Answer {
                id: q.id,
                text: q.text.to_uppercase(),
            })
            .await
            .map_err(|e| HandlerError::new(e.to_string()))?;
            Ok(())
        }));
    let replier = start_router(replier, &config, publisher.clone())?;
    let requester = start_requester(&config, publisher, &unique("replies")).await?;

    let asks = (0..5).map(|n| {
        let requester = &requester;
        let questions = &questions;
        async move {
            let q = Question {
                id: format!("q{n}"),
                text: format!("question {n}"),
            };
            requester
                .request::<Question, Answer>(questions, q, WAIT)
                .await
        }
    });
    let answers = futures::future::join_all(asks).await;
    for (n, answer) in answers.into_iter().enumerate() {
        assert_eq!(
            answer?,
            Answer {
                id: format!("q{n}"),
                text: format!("QUESTION {n}")
            }
        );
    }
    replier.shutdown().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn request_times_out_and_late_or_unknown_replies_are_counted() -> anyhow::Result<()> {
    metrics::install();
    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let config = kafka(&bootstrap);
    let publisher = Publisher::kafka(&config)?;
    let questions = unique("unanswered");
    let replies = unique("replies");
    let requester = start_requester(&config, publisher.clone(), &replies).await?;

    // Nobody answers: the request times out after 5 s of (virtual) time.
    let started = tokio::time::Instant::now();
    let q = Question {
        id: "q".into(),
        text: "anyone?".into(),
    };
    let result = requester
        .request::<Question, Answer>(&questions, q, Duration::from_secs(5))
        .await;
    assert!(
        matches!(result, Err(RequestError::Timeout(_))),
        "{result:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(5));

    // The answer comes late: counted as expired and dropped.
    let request = &read_topic(&bootstrap, &questions, 1, WAIT).await[0];
    let request = Envelope::read_from(&request.headers)?;
    assert_eq!(request.reply_to.as_deref(), Some(replies.as_str()));
    let late = Answer {
        id: "q".into(),
        text: "too late".into(),
    };
    publisher
        .publish_with(
            &replies,
            late.clone(),
            request.follow_up::<Answer>(request.traceparent.child()),
        )
        .await?;
    let r = replies.clone();
    assert!(
        wait_until(WAIT, move || metric(
            REPLIES_DROPPED,
            &[("topic", &r), ("reason", "expired")]
        ) == 1.0)
        .await
    );

    // An answer to no request at all: counted as unknown.
    publisher.publish(&replies, late).await?;
    let r = replies.clone();
    assert!(
        wait_until(WAIT, move || metric(
            REPLIES_DROPPED,
            &[("topic", &r), ("reason", "unknown")]
        ) == 1.0)
        .await
    );
    Ok(())
}
