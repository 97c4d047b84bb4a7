//! The admin APIs AdminClients call (AlterConfigs, IncrementalAlterConfigs, DeleteRecords,
//! OffsetDelete, DescribeCluster, DescribeLogDirs, ElectLeaders, reassignments,
//! OffsetForLeaderEpoch), through librdkafka's AdminClient where it has them and over the wire
//! with `kafka-protocol` where it does not. Each checks the effect, not just the answer, and that
//! it survives a restart where it should.

mod common;

use std::time::{Duration, Instant};

use common::wire::{call, s};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::net::TcpStream;

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap()
}

async fn create(admin: &AdminClient<DefaultClientContext>, topic: &str, partitions: i32) {
    let r = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
}

async fn produce(bootstrap: &str, topic: &str, count: usize) {
    let producer = common::producer(bootstrap, "all");
    for i in 0..count {
        let key = format!("k{i}");
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload("v").partition(0),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

/// DescribeConfigs of one resource over the wire, at v4 with synonyms.
async fn describe(
    s_: &mut TcpStream,
    resource_type: i8,
    name: &str,
) -> describe_configs_response::DescribeConfigsResult {
    let req = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))
                .with_configuration_keys(None),
        ]);
    let mut resp: DescribeConfigsResponse = call(s_, ApiKey::DescribeConfigs, 4, &req).await;
    resp.results.remove(0)
}

fn entry<'a>(
    r: &'a describe_configs_response::DescribeConfigsResult,
    name: &str,
) -> &'a describe_configs_response::DescribeConfigsResourceResult {
    r.configs
        .iter()
        .find(|c| c.name.as_str() == name)
        .unwrap_or_else(|| panic!("{name} not described"))
}

fn value(r: &describe_configs_response::DescribeConfigsResult, name: &str) -> String {
    entry(r, name)
        .value
        .as_deref()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_configs_persist_apply_and_validate_only_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let admin = admin(&broker.bootstrap_servers());
    create(&admin, "cfg", 1).await;

    // compression.type was rejected before; every Kafka topic config is accepted now.
    let altered = admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("cfg"))
                .set("max.message.bytes", "2000")
                .set("compression.type", "zstd")
                .set("min.insync.replicas", "1")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(altered[0].is_ok(), "{altered:?}");
    // Applied at once: a batch over 2000 bytes is refused.
    let producer = common::producer(&broker.bootstrap_servers(), "all");
    let big = vec![b'x'; 5000];
    let refused = producer
        .send(
            FutureRecord::<(), _>::to("cfg").payload(&big),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        matches!(&refused, Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)),
        "{refused:?}"
    );

    // validate_only: checked, not applied.
    let checked = admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("cfg")).set("retention.ms", "1000")],
            &AdminOptions::new().validate_only(true),
        )
        .await
        .unwrap();
    assert!(checked[0].is_ok(), "{checked:?}");
    // rdkafka 0.39's alter_configs reports every resource as Ok whatever the broker answered,
    // so the refusal is checked over the wire.
    let mut conn = TcpStream::connect(broker.local_addr()).await.unwrap();
    let bad = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("cfg"))
            .with_configs(vec![
                alter_configs_request::AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("-7"))),
            ]),
    ]);
    let bad: AlterConfigsResponse = call(&mut conn, ApiKey::AlterConfigs, 2, &bad).await;
    assert_eq!(
        bad.responses[0].error_code,
        ResponseError::InvalidConfig.code()
    );
    assert_eq!(
        bad.responses[0].error_message.as_deref(),
        Some("Invalid value -7 for configuration retention.ms: Value must be at least -1")
    );

    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic("cfg")], &AdminOptions::new())
        .await
        .unwrap();
    let resource = described[0].as_ref().unwrap();
    assert_eq!(
        resource.get("compression.type").unwrap().value.as_deref(),
        Some("zstd")
    );
    assert!(!resource.get("compression.type").unwrap().is_default);
    assert_eq!(
        resource.get("retention.ms").unwrap().value.as_deref(),
        Some("604800000"),
        "validate_only changed nothing"
    );
    // Every Kafka topic config is listed, not only the ones Ferry acts on.
    for name in [
        "delete.retention.ms",
        "message.timestamp.type",
        "segment.index.bytes",
    ] {
        assert!(resource.get(name).is_some(), "{name} missing");
    }

    // Legacy AlterConfigs replaces the whole set: only retention.ms remains overridden.
    let replaced = admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("cfg")).set("retention.ms", "3600000")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(replaced[0].is_ok());
    broker.shutdown().await.unwrap();

    // Persisted in topic.json: the same after a restart.
    let broker = common::start(dir.path()).await;
    let mut conn = TcpStream::connect(broker.local_addr()).await.unwrap();
    let r = describe(&mut conn, 2, "cfg").await;
    assert_eq!(value(&r, "retention.ms"), "3600000");
    assert_eq!(entry(&r, "retention.ms").config_source, 1);
    assert_eq!(value(&r, "compression.type"), "producer");
    assert_eq!(entry(&r, "compression.type").config_source, 5);
    broker.shutdown().await.unwrap();
}

fn incremental(
    resource_type: i8,
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
) -> IncrementalAlterConfigsRequest {
    IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(s(name))
            .with_configs(
                ops.iter()
                    .map(|(n, op, v)| {
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(s(n))
                            .with_config_operation(*op)
                            .with_value(v.map(s))
                    })
                    .collect(),
            ),
    ])
}

async fn incremental_call(
    conn: &mut TcpStream,
    req: IncrementalAlterConfigsRequest,
) -> (i16, Option<String>) {
    let resp: IncrementalAlterConfigsResponse =
        call(conn, ApiKey::IncrementalAlterConfigs, 1, &req).await;
    let r = &resp.responses[0];
    (
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_alter_configs_on_topics_and_broker_dynamic_configs() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let admin = admin(&broker.bootstrap_servers());
    create(&admin, "inc", 1).await;
    create(&admin, "other", 1).await;
    let mut conn = TcpStream::connect(broker.local_addr()).await.unwrap();

    // SET, APPEND to a list, then DELETE.
    let ok = incremental_call(
        &mut conn,
        incremental(
            2,
            "inc",
            &[
                ("retention.ms", 0, Some("5000")),
                ("cleanup.policy", 2, Some("compact")),
            ],
        ),
    )
    .await;
    assert_eq!(ok, (0, None));
    let r = describe(&mut conn, 2, "inc").await;
    assert_eq!(value(&r, "retention.ms"), "5000");
    assert_eq!(value(&r, "cleanup.policy"), "compact,delete");
    let ok = incremental_call(
        &mut conn,
        incremental(2, "inc", &[("retention.ms", 1, None)]),
    )
    .await;
    assert_eq!(ok.0, 0);
    let r = describe(&mut conn, 2, "inc").await;
    assert_eq!(value(&r, "retention.ms"), "604800000");
    assert_eq!(
        value(&r, "cleanup.policy"),
        "compact,delete",
        "DELETE touched only its key"
    );
    // APPEND to a non-list config is INVALID_CONFIG, as in Kafka.
    let (code, message) = incremental_call(
        &mut conn,
        incremental(2, "inc", &[("segment.ms", 2, Some("5"))]),
    )
    .await;
    assert_eq!(code, ResponseError::InvalidConfig.code());
    assert!(message.unwrap().contains("segment.ms"));

    // Broker dynamic config: changes the default of every topic that does not override it.
    let (code, _) = incremental_call(
        &mut conn,
        incremental(4, "0", &[("log.retention.ms", 0, Some("123456"))]),
    )
    .await;
    assert_eq!(code, 0);
    let r = describe(&mut conn, 2, "other").await;
    assert_eq!(value(&r, "retention.ms"), "123456");
    assert_eq!(
        entry(&r, "retention.ms").config_source,
        2,
        "DYNAMIC_BROKER_CONFIG"
    );
    let synonyms: Vec<(String, i8)> = entry(&r, "retention.ms")
        .synonyms
        .iter()
        .map(|s| (s.name.to_string(), s.source))
        .collect();
    assert_eq!(synonyms, vec![("log.retention.ms".to_owned(), 2)]);

    // Read-only broker configs are refused with Kafka's error and message; nothing changes.
    let (code, message) = incremental_call(
        &mut conn,
        incremental(
            4,
            "0",
            &[
                ("auto.create.topics.enable", 0, Some("false")),
                ("log.segment.bytes", 0, Some("4096")),
            ],
        ),
    )
    .await;
    assert_eq!(code, ResponseError::InvalidRequest.code());
    assert_eq!(
        message.as_deref(),
        Some("Cannot update these configs dynamically: auto.create.topics.enable")
    );
    // validate_only changes nothing either.
    let mut req = incremental(4, "", &[("log.segment.bytes", 0, Some("4096"))]);
    req.validate_only = true;
    assert_eq!(incremental_call(&mut conn, req).await.0, 0);
    let b = describe(&mut conn, 4, "0").await;
    assert_eq!(value(&b, "log.segment.bytes"), "1073741824");
    assert_eq!(value(&b, "log.retention.ms"), "123456");
    assert!(!entry(&b, "log.retention.ms").read_only);
    assert!(entry(&b, "advertised.listeners").read_only);
    // Another node id is refused.
    let (code, _) = incremental_call(
        &mut conn,
        incremental(4, "3", &[("log.retention.ms", 0, Some("1"))]),
    )
    .await;
    assert_eq!(code, ResponseError::InvalidRequest.code());
    broker.shutdown().await.unwrap();

    let broker = common::start(dir.path()).await;
    let mut conn = TcpStream::connect(broker.local_addr()).await.unwrap();
    let r = describe(&mut conn, 2, "other").await;
    assert_eq!(
        value(&r, "retention.ms"),
        "123456",
        "dynamic config survives restart"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_config_names_are_rejected_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let mut conn = TcpStream::connect(broker.local_addr()).await.unwrap();
    let req = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(s("named")))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![
                create_topics_request::CreatableTopicConfig::default()
                    .with_name(s("retention.msec"))
                    .with_value(Some(s("1"))),
                create_topics_request::CreatableTopicConfig::default()
                    .with_name(s("compression.type"))
                    .with_value(Some(s("lz4"))),
                create_topics_request::CreatableTopicConfig::default()
                    .with_name(s("segmnt.bytes"))
                    .with_value(Some(s("1"))),
            ]),
    ]);
    let resp: CreateTopicsResponse = call(&mut conn, ApiKey::CreateTopics, 7, &req).await;
    assert_eq!(
        resp.topics[0].error_code,
        ResponseError::InvalidConfig.code()
    );
    assert_eq!(
        resp.topics[0].error_message.as_deref(),
        Some("Unknown topic config name: retention.msec, segmnt.bytes")
    );

    let req = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(s("named")))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let _: CreateTopicsResponse = call(&mut conn, ApiKey::CreateTopics, 7, &req).await;
    let (code, message) = incremental_call(
        &mut conn,
        incremental(
            2,
            "named",
            &[
                ("no.such.thing", 0, Some("1")),
                ("retention.ms", 0, Some("1")),
            ],
        ),
    )
    .await;
    assert_eq!(code, ResponseError::InvalidConfig.code());
    assert_eq!(
        message.as_deref(),
        Some("Unknown topic config name: no.such.thing")
    );
    let r = describe(&mut conn, 2, "named").await;
    assert_eq!(
        value(&r, "retention.ms"),
        "604800000",
        "a refused change changes nothing"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_error_message_is_null_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let mut conn = TcpStream::connect(broker.local_addr()).await.unwrap();
    for v in 2..=7i16 {
        let req = CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(s(&format!("null-msg-{v}"))))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
        let resp: CreateTopicsResponse = call(&mut conn, ApiKey::CreateTopics, v, &req).await;
        assert_eq!(resp.topics[0].error_code, 0, "v{v}");
        assert_eq!(resp.topics[0].error_message, None, "v{v}");
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_log_start_durably() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let bootstrap = broker.bootstrap_servers();
    let admin = admin(&bootstrap);
    create(&admin, "dr", 1).await;
    produce(&bootstrap, "dr", 10).await;

    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("dr", 0, Offset::Offset(4))
        .unwrap();
    let result = admin
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .unwrap();
    let p = result.find_partition("dr", 0).unwrap();
    assert!(p.error().is_ok(), "{:?}", p.error());
    assert_eq!(p.offset(), Offset::Offset(4), "the new low watermark");

    // Past the high watermark: OFFSET_OUT_OF_RANGE, and nothing moves.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("dr", 0, Offset::Offset(11))
        .unwrap();
    let result = admin
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .unwrap();
    assert!(result.find_partition("dr", 0).unwrap().error().is_err());

    let consumer = common::consumer(&bootstrap);
    assert_eq!(
        consumer
            .fetch_watermarks("dr", 0, Duration::from_secs(5))
            .unwrap(),
        (4, 10),
        "ListOffsets EARLIEST is the new log start"
    );
    let got = common::consume_from_beginning(&bootstrap, &[("dr", 0)], 6, Duration::from_secs(10));
    assert_eq!(got.first().map(|g| g.offset), Some(4));
    assert_eq!(got.len(), 6);
    broker.shutdown().await.unwrap();

    let broker = common::start(dir.path()).await;
    let mut conn = TcpStream::connect(broker.local_addr()).await.unwrap();
    // A fetch below the log start is OFFSET_OUT_OF_RANGE, also after a restart.
    let fetch = FetchRequest::default()
        .with_max_wait_ms(10)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(TopicName(s("dr")))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(2)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let resp: FetchResponse = call(&mut conn, ApiKey::Fetch, 11, &fetch).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, ResponseError::OffsetOutOfRange.code());
    assert_eq!(p.log_start_offset, 4);
    // -1 means "up to the high watermark".
    let req = DeleteRecordsRequest::default().with_topics(vec![
        delete_records_request::DeleteRecordsTopic::default()
            .with_name(TopicName(s("dr")))
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(-1),
            ]),
        delete_records_request::DeleteRecordsTopic::default()
            .with_name(TopicName(s("nope")))
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(1),
            ]),
    ]);
    let resp: DeleteRecordsResponse = call(&mut conn, ApiKey::DeleteRecords, 2, &req).await;
    assert_eq!(resp.topics[0].partitions[0].low_watermark, 10);
    assert_eq!(
        resp.topics[1].partitions[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    broker.shutdown().await.unwrap();
}

/// A group member subscribed to `subscribed`, with offsets committed for `subscribed` and `free`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_delete_refuses_subscribed_topics_and_deletes_the_others_durably() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let bootstrap = broker.bootstrap_servers();
    let admin = admin(&bootstrap);
    create(&admin, "subscribed", 1).await;
    create(&admin, "free", 1).await;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "od")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&["subscribed"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while consumer.assignment().unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "no assignment");
        let _ = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
    }
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("subscribed", 0, Offset::Offset(3))
        .unwrap();
    offsets
        .add_partition_offset("free", 0, Offset::Offset(5))
        .unwrap();
    consumer
        .commit(&offsets, rdkafka::consumer::CommitMode::Sync)
        .unwrap();

    let mut conn = TcpStream::connect(broker.local_addr()).await.unwrap();
    let req = OffsetDeleteRequest::default()
        .with_group_id(GroupId(s("od")))
        .with_topics(vec![
            offset_delete_request::OffsetDeleteRequestTopic::default()
                .with_name(TopicName(s("subscribed")))
                .with_partitions(vec![
                    offset_delete_request::OffsetDeleteRequestPartition::default()
                        .with_partition_index(0),
                ]),
            offset_delete_request::OffsetDeleteRequestTopic::default()
                .with_name(TopicName(s("free")))
                .with_partitions(vec![
                    offset_delete_request::OffsetDeleteRequestPartition::default()
                        .with_partition_index(0),
                ]),
        ]);
    let resp: OffsetDeleteResponse = call(&mut conn, ApiKey::OffsetDelete, 0, &req).await;
    assert_eq!(resp.error_code, 0);
    assert_eq!(
        resp.topics[0].partitions[0].error_code,
        ResponseError::GroupSubscribedToTopic.code()
    );
    assert_eq!(resp.topics[1].partitions[0].error_code, 0);

    let unknown: OffsetDeleteResponse = call(
        &mut conn,
        ApiKey::OffsetDelete,
        0,
        &OffsetDeleteRequest::default().with_group_id(GroupId(s("no-such-group"))),
    )
    .await;
    assert_eq!(unknown.error_code, ResponseError::GroupIdNotFound.code());
    drop(consumer);
    broker.shutdown().await.unwrap();

    // Durable: after a restart "free" has no committed offset and "subscribed" still has its own.
    let broker = common::start(dir.path()).await;
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "od")
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("subscribed", 0);
    wanted.add_partition("free", 0);
    let committed = reader
        .committed_offsets(wanted, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        committed.find_partition("subscribed", 0).unwrap().offset(),
        Offset::Offset(3)
    );
    assert_eq!(
        committed.find_partition("free", 0).unwrap().offset(),
        Offset::Invalid
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_apis_answer_for_one_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let bootstrap = broker.bootstrap_servers();
    let admin = admin(&bootstrap);
    create(&admin, "shape", 2).await;
    produce(&bootstrap, "shape", 3).await;
    let mut conn = TcpStream::connect(broker.local_addr()).await.unwrap();

    let cluster: DescribeClusterResponse = call(
        &mut conn,
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default().with_endpoint_type(1),
    )
    .await;
    assert_eq!(cluster.error_code, 0);
    assert_eq!(cluster.controller_id.0, 0);
    assert_eq!(cluster.brokers.len(), 1);
    assert_eq!(
        cluster.brokers[0].port,
        i32::from(broker.local_addr().port())
    );
    assert!(cluster.cluster_id.starts_with("ferry-"));

    let dirs: DescribeLogDirsResponse = call(
        &mut conn,
        ApiKey::DescribeLogDirs,
        4,
        &DescribeLogDirsRequest::default().with_topics(None),
    )
    .await;
    let d = &dirs.results[0];
    assert!(d.log_dir.ends_with("topics"), "{}", d.log_dir);
    assert!(d.total_bytes > 0 && d.usable_bytes > 0 && d.usable_bytes <= d.total_bytes);
    let t = d
        .topics
        .iter()
        .find(|t| t.name.0.as_str() == "shape")
        .unwrap();
    assert_eq!(t.partitions.len(), 2);
    let p0 = t
        .partitions
        .iter()
        .find(|p| p.partition_index == 0)
        .unwrap();
    assert!(p0.partition_size > 0, "partition 0 holds the records");

    let elect: ElectLeadersResponse = call(
        &mut conn,
        ApiKey::ElectLeaders,
        2,
        &ElectLeadersRequest::default().with_topic_partitions(Some(vec![
            elect_leaders_request::TopicPartitions::default()
                .with_topic(TopicName(s("shape")))
                .with_partitions(vec![0, 7]),
        ])),
    )
    .await;
    let results = &elect.replica_election_results[0].partition_result;
    assert_eq!(
        results[0].error_code,
        ResponseError::ElectionNotNeeded.code()
    );
    assert_eq!(
        results[1].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );

    let reassign = |replicas: Option<Vec<i32>>| {
        AlterPartitionReassignmentsRequest::default().with_topics(vec![
            alter_partition_reassignments_request::ReassignableTopic::default()
                .with_name(TopicName(s("shape")))
                .with_partitions(vec![
                    alter_partition_reassignments_request::ReassignablePartition::default()
                        .with_partition_index(0)
                        .with_replicas(replicas.map(|r| r.into_iter().map(BrokerId).collect())),
                ]),
        ])
    };
    let code = |r: AlterPartitionReassignmentsResponse| r.responses[0].partitions[0].error_code;
    let same: AlterPartitionReassignmentsResponse = call(
        &mut conn,
        ApiKey::AlterPartitionReassignments,
        0,
        &reassign(Some(vec![0])),
    )
    .await;
    assert_eq!(code(same), 0);
    let elsewhere: AlterPartitionReassignmentsResponse = call(
        &mut conn,
        ApiKey::AlterPartitionReassignments,
        0,
        &reassign(Some(vec![1])),
    )
    .await;
    assert_eq!(
        code(elsewhere),
        ResponseError::InvalidReplicaAssignment.code()
    );
    let cancel: AlterPartitionReassignmentsResponse = call(
        &mut conn,
        ApiKey::AlterPartitionReassignments,
        0,
        &reassign(None),
    )
    .await;
    assert_eq!(code(cancel), ResponseError::NoReassignmentInProgress.code());
    let listed: ListPartitionReassignmentsResponse = call(
        &mut conn,
        ApiKey::ListPartitionReassignments,
        0,
        &ListPartitionReassignmentsRequest::default().with_topics(None),
    )
    .await;
    assert_eq!(listed.error_code, 0);
    assert!(listed.topics.is_empty());

    let epochs: OffsetForLeaderEpochResponse = call(
        &mut conn,
        ApiKey::OffsetForLeaderEpoch,
        4,
        &OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(TopicName(s("shape")))
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(0)
                            .with_leader_epoch(0),
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(3)
                            .with_leader_epoch(3),
                    ]),
            ]),
    )
    .await;
    let p = &epochs.topics[0].partitions;
    assert_eq!(
        (p[0].error_code, p[0].leader_epoch, p[0].end_offset),
        (0, 0, 3)
    );
    assert_eq!(p[1].error_code, ResponseError::UnknownLeaderEpoch.code());
    broker.shutdown().await.unwrap();
}

/// Fetch every value of a DescribeConfigs result as JSON, for snapshots; `redact` names
/// configs whose value depends on the run (ports, temp paths).
fn as_json(
    r: &describe_configs_response::DescribeConfigsResult,
    redact: &[&str],
) -> serde_json::Value {
    let configs: Vec<serde_json::Value> = r
        .configs
        .iter()
        .map(|c| {
            let hide = redact.contains(&c.name.as_str());
            let shown = |v: &Option<kafka_protocol::protocol::StrBytes>| {
                if hide {
                    serde_json::json!("[redacted]")
                } else {
                    serde_json::json!(v.as_ref().map(|v| v.to_string()))
                }
            };
            serde_json::json!({
                "name": c.name.to_string(),
                "value": shown(&c.value),
                "source": c.config_source,
                "type": c.config_type,
                "read_only": c.read_only,
                "sensitive": c.is_sensitive,
                "synonyms": c.synonyms.iter().map(|s| serde_json::json!({
                    "name": s.name.to_string(),
                    "value": shown(&s.value),
                    "source": s.source,
                })).collect::<Vec<_>>(),
                "documentation": c.documentation.as_ref().map(|d| d.to_string()),
            })
        })
        .collect();
    serde_json::json!({
        "error_code": r.error_code,
        "configs": configs,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_configs_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let admin = admin(&broker.bootstrap_servers());
    let created = admin
        .create_topics(
            &[NewTopic::new("snap", 1, TopicReplication::Fixed(1))
                .set("retention.ms", "3600000")
                .set("compression.type", "zstd")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created[0].is_ok());
    let mut conn = TcpStream::connect(broker.local_addr()).await.unwrap();
    // A cluster-wide dynamic default, so a DYNAMIC_DEFAULT_BROKER_CONFIG synonym shows.
    let (code, _) = incremental_call(
        &mut conn,
        incremental(4, "", &[("log.segment.bytes", 0, Some("536870912"))]),
    )
    .await;
    assert_eq!(code, 0);

    let req = |t: i8, name: &str| {
        DescribeConfigsRequest::default()
            .with_include_synonyms(true)
            .with_include_documentation(true)
            .with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(t)
                    .with_resource_name(s(name))
                    .with_configuration_keys(None),
            ])
    };
    let topic: DescribeConfigsResponse =
        call(&mut conn, ApiKey::DescribeConfigs, 4, &req(2, "snap")).await;
    insta::assert_json_snapshot!("describe_configs_topic", as_json(&topic.results[0], &[]));
    let redact = ["advertised.listeners", "listeners", "log.dirs"];
    let broker_configs: DescribeConfigsResponse =
        call(&mut conn, ApiKey::DescribeConfigs, 4, &req(4, "0")).await;
    insta::assert_json_snapshot!(
        "describe_configs_broker",
        as_json(&broker_configs.results[0], &redact)
    );
    let cluster_default: DescribeConfigsResponse =
        call(&mut conn, ApiKey::DescribeConfigs, 4, &req(4, "")).await;
    insta::assert_json_snapshot!(
        "describe_configs_cluster_default",
        as_json(&cluster_default.results[0], &[])
    );
    // advertised.listeners names the address clients connect to.
    let listeners = broker_configs.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == "advertised.listeners")
        .unwrap();
    assert_eq!(
        listeners.value.as_deref(),
        Some(format!("PLAINTEXT://{}", broker.local_addr()).as_str())
    );
    // Without include_synonyms / include_documentation, neither is sent.
    let plain: DescribeConfigsResponse = call(
        &mut conn,
        ApiKey::DescribeConfigs,
        4,
        &req(2, "snap")
            .with_include_synonyms(false)
            .with_include_documentation(false),
    )
    .await;
    assert!(
        plain.results[0]
            .configs
            .iter()
            .all(|c| c.synonyms.is_empty() && c.documentation.is_none())
    );
    broker.shutdown().await.unwrap();
}

/// librdkafka's view of the same: sources and defaults as a Kafka AdminClient reports them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_configs_through_rdkafka_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let admin = admin(&broker.bootstrap_servers());
    let created = admin
        .create_topics(
            &[NewTopic::new("rd", 1, TopicReplication::Fixed(1)).set("segment.ms", "60000")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created[0].is_ok());
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic("rd")], &AdminOptions::new())
        .await
        .unwrap();
    let resource = described[0].as_ref().unwrap();
    let mut entries: Vec<serde_json::Value> = resource
        .entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "value": e.value,
                "source": format!("{:?}", e.source),
                "default": e.is_default,
                "read_only": e.is_read_only,
                "sensitive": e.is_sensitive,
            })
        })
        .collect();
    entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    insta::assert_json_snapshot!("describe_configs_rdkafka_topic", entries);
    broker.shutdown().await.unwrap();
}
