//! Issue 17 (KIP-848): `/api/ferry/groups` shows each group's protocol; for a consumer-protocol
//! group the group and assignment epochs and each member's epoch, assignment and target
//! assignment (librdkafka's classic DescribeGroups showed such a group as Dead with no members).

use std::time::Duration;

use ferry_testkit::{Harness, Http, create_topic};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use reqwest::StatusCode;
use serde_json::Value;

fn group<'a>(groups: &'a Value, name: &str) -> Option<&'a Value> {
    groups.as_array()?.iter().find(|g| g["name"] == name)
}

/// A consumer of `topic` in `group`, speaking `protocol` (`classic` or `consumer`).
fn consumer(bootstrap: &str, group: &str, protocol: &str, topic: &str) -> StreamConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("group.protocol", protocol)
        .set("auto.offset.reset", "earliest");
    if protocol == "classic" {
        config.set("session.timeout.ms", "6000");
    }
    let consumer: StreamConsumer = config.create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// Polls `consumer` in the background (a member that is not polled does not reconcile).
fn keep_polling(consumer: StreamConsumer) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_show_protocol_epochs_and_assignments() {
    let harness = Harness::start().await;
    let handle = dashboard::start(harness.config(), Vec::new(), harness.token())
        .await
        .unwrap();
    let http = Http::new(handle.addr);
    let bootstrap = harness.bootstrap();
    create_topic(&bootstrap, "kip848", 2).await;

    let modern = keep_polling(consumer(&bootstrap, "modern", "consumer", "kip848"));
    let old = keep_polling(consumer(&bootstrap, "old", "classic", "kip848"));

    // The consumer-protocol member, reconciled: its epoch is the assignment epoch and it owns
    // both partitions, its target too.
    let groups = http
        .until("/api/ferry/groups", |s, b| {
            s == StatusCode::OK
                && group(b, "modern").is_some_and(|g| {
                    g["state"] == "Stable"
                        && g["members"][0]["assignment"] == serde_json::json!([["kip848", [0, 1]]])
                })
                && group(b, "old").is_some_and(|g| {
                    g["state"] == "Stable"
                        && g["members"][0]["assignment"] == serde_json::json!([["kip848", [0, 1]]])
                })
        })
        .await;

    let modern_view = group(&groups, "modern").unwrap();
    assert_eq!(modern_view["protocol"], "consumer", "{modern_view}");
    let members = modern_view["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{modern_view}");
    let member = &members[0];
    let epoch = member["memberEpoch"].as_i64().unwrap();
    assert!(epoch > 0, "{modern_view}");
    assert_eq!(
        member["targetAssignment"], member["assignment"],
        "{modern_view}"
    );
    assert!(!member["id"].as_str().unwrap().is_empty(), "{modern_view}");
    let group_epoch = modern_view["groupEpoch"].as_i64().unwrap();
    let assignment_epoch = modern_view["assignmentEpoch"].as_i64().unwrap();
    assert!(group_epoch > 0, "{modern_view}");
    assert_eq!(assignment_epoch, group_epoch, "{modern_view}");
    assert_eq!(epoch, assignment_epoch, "{modern_view}");
    assert!(
        modern_view["assignor"]
            .as_str()
            .is_some_and(|a| !a.is_empty()),
        "{modern_view}"
    );
    assert!(modern_view["offsets"].is_array(), "{modern_view}");

    // The classic group: protocol classic, no epochs; its assignor is the client's.
    let old_view = group(&groups, "old").unwrap();
    assert_eq!(old_view["protocol"], "classic", "{old_view}");
    assert_eq!(
        old_view["members"].as_array().unwrap().len(),
        1,
        "{old_view}"
    );
    assert!(old_view["groupEpoch"].is_null(), "{old_view}");
    assert!(
        old_view["members"][0]["memberEpoch"].is_null(),
        "{old_view}"
    );
    assert!(
        old_view["assignor"].as_str().is_some_and(|a| !a.is_empty()),
        "{old_view}"
    );

    // The dashboard's own tap is a classic group too.
    if let Some(tap) = group(&groups, "ferry-dashboard") {
        assert_eq!(tap["protocol"], "classic", "{tap}");
    }

    modern.abort();
    old.abort();
}
