//! A minimal Kafka protocol client for the admin APIs librdkafka does not expose
//! (ListTransactions, DescribeTransactions, DescribeProducers; KIP-664). It speaks to any Kafka
//! cluster: it asks each broker's ApiVersions and uses the highest version both sides know; the
//! `kafka-protocol` crate encodes and decodes every message. It also describes consumer-protocol
//! groups (KIP-848: ListGroups v5, ConsumerGroupDescribe), which librdkafka's classic
//! DescribeGroups shows as `Dead` with no members; [`super::Admin::groups`] and the `ferry`
//! command use it for that.
//!
//! It connects over plain TCP (no TLS or SASL).

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, MetadataRequest, MetadataResponse, OffsetFetchRequest,
    OffsetFetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// A protocol-level failure (a bad answer, an error code, no common version).
fn fail(what: impl std::fmt::Display) -> Error {
    Error::Protocol(what.to_string())
}

/// Longest a request may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response accepted.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// One connection to one broker, with the versions it supports.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    versions: Vec<(i16, i16, i16)>,
    correlation: i32,
}

impl Connection {
    /// Connects to `addr` (`host:port`) and learns its API versions.
    pub async fn open(addr: &str) -> Result<Connection> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Unavailable(format!("connecting to {addr} timed out")))?
            .map_err(|e| Error::Unavailable(format!("cannot connect to {addr}: {e}")))?;
        let mut c = Connection {
            stream,
            versions: Vec::new(),
            correlation: 0,
        };
        // v0 is understood by every broker.
        let resp: ApiVersionsResponse = c
            .send(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())
            .await?;
        if resp.error_code != 0 {
            return Err(fail(format!(
                "{addr}: ApiVersions error {}",
                resp.error_code
            )));
        }
        c.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        Ok(c)
    }

    /// The highest version of `api` both sides implement, at most `ours`.
    pub fn version(&self, api: ApiKey, ours: i16) -> Result<i16> {
        let codec = api.valid_versions();
        let (_, min, max) = self
            .versions
            .iter()
            .copied()
            .find(|(k, _, _)| *k == api as i16)
            .ok_or_else(|| fail(format!("the broker does not support {api:?}")))?;
        let v = max.min(ours).min(codec.max);
        if v < min.max(codec.min) {
            return Err(fail(format!(
                "no common version of {api:?} (broker {min}..{max})"
            )));
        }
        Ok(v)
    }

    /// Sends one request at `version` and decodes its response.
    pub async fn send<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp> {
        self.correlation += 1;
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("ferry")))
            .encode(&mut buf, api.request_header_version(version))
            .map_err(|e| fail(format!("cannot encode a {api:?} request header: {e}")))?;
        req.encode(&mut buf, version)
            .map_err(|e| fail(format!("cannot encode a {api:?} v{version} request: {e}")))?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let exchange = async {
            self.stream.write_all(&buf).await?;
            let len = self.stream.read_i32().await?;
            let len = usize::try_from(len).ok().filter(|&l| l <= MAX_RESPONSE);
            let len = len.ok_or_else(|| fail("bad response length"))?;
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await?;
            Ok::<_, Error>(Bytes::from(body))
        };
        let mut body = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| Error::Unavailable("the broker did not answer in time".into()))??;
        let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|e| fail(format!("cannot decode a {api:?} response header: {e}")))?;
        if header.correlation_id != self.correlation {
            return Err(fail("response out of order"));
        }
        let resp = Resp::decode(&mut body, version)
            .map_err(|e| fail(format!("cannot decode a {api:?} v{version} response: {e}")))?;
        if body.has_remaining() {
            tracing::debug!(
                ?api,
                version,
                trailing = body.remaining(),
                "trailing bytes in response"
            );
        }
        Ok(resp)
    }
}

/// The first reachable bootstrap broker of a comma-separated list.
pub async fn bootstrap(brokers: &str) -> Result<Connection> {
    let mut last = None;
    for addr in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match Connection::open(addr).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Config("no broker address given".into())))
}

/// `host:port` of every broker in the cluster.
pub async fn all_brokers(c: &mut Connection) -> Result<Vec<String>> {
    let v = c.version(ApiKey::Metadata, 4)?;
    let resp: MetadataResponse = c
        .send(
            ApiKey::Metadata,
            v,
            &MetadataRequest::default().with_topics(Some(vec![])),
        )
        .await?;
    Ok(resp
        .brokers
        .iter()
        .map(|b| format!("{}:{}", b.host.as_str(), b.port))
        .collect())
}

/// `host:port` of the transaction coordinator of `transactional_id`.
pub async fn transaction_coordinator(c: &mut Connection, transactional_id: &str) -> Result<String> {
    coordinator(c, transactional_id, 1).await
}

/// `host:port` of the coordinator of `key` (key type 0: a group, 1: a transactional id).
async fn coordinator(c: &mut Connection, key: &str, key_type: i8) -> Result<String> {
    let v = c.version(ApiKey::FindCoordinator, 3)?.max(1);
    let req = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(key.to_owned()))
        .with_key_type(key_type);
    let resp: FindCoordinatorResponse = c.send(ApiKey::FindCoordinator, v, &req).await?;
    if resp.error_code != 0 {
        return Err(fail(format!(
            "FindCoordinator for {key:?}: error {}",
            resp.error_code
        )));
    }
    Ok(format!("{}:{}", resp.host.as_str(), resp.port))
}

/// UNSTABLE_OFFSET_COMMIT: a transaction has offsets pending for the partition.
const UNSTABLE_OFFSET_COMMIT: i16 = 88;

/// Which of `partitions` (topic, partition; empty: all of the cluster's) have transactional
/// offsets of `group` pending, asked with OffsetFetch `require_stable` (v7, KIP-447). `None` if
/// the coordinator is too old to say.
pub async fn pending_offsets(
    brokers: &str,
    group: &str,
    partitions: &[(String, i32)],
) -> Result<Option<Vec<(String, i32)>>> {
    let mut bootstrap = bootstrap(brokers).await?;
    let mut partitions = partitions.to_vec();
    if partitions.is_empty() {
        // Every partition of the cluster: a group may have nothing but pending offsets.
        let v = bootstrap.version(ApiKey::Metadata, 4)?;
        let resp: MetadataResponse = bootstrap
            .send(
                ApiKey::Metadata,
                v,
                &MetadataRequest::default().with_topics(None),
            )
            .await?;
        for t in &resp.topics {
            let Some(name) = &t.name else { continue };
            for p in &t.partitions {
                partitions.push((name.0.to_string(), p.partition_index));
            }
        }
        partitions.sort();
    }
    let addr = coordinator(&mut bootstrap, group, 0).await?;
    let mut c = Connection::open(&addr).await?;
    // v7 is the one version with both require_stable and the single-group layout.
    let v = c.version(ApiKey::OffsetFetch, 7)?;
    if v < 7 {
        return Ok(None);
    }
    let mut topics: Vec<OffsetFetchRequestTopic> = Vec::new();
    for (topic, p) in &partitions {
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == topic => t.partition_indexes.push(*p),
            _ => topics.push(
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partition_indexes(vec![*p]),
            ),
        }
    }
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
        .with_topics(Some(topics))
        .with_require_stable(true);
    let resp: OffsetFetchResponse = c.send(ApiKey::OffsetFetch, v, &req).await?;
    Ok(Some(
        resp.topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.error_code == UNSTABLE_OFFSET_COMMIT)
                    .map(|p| (t.name.0.to_string(), p.partition_index))
            })
            .collect(),
    ))
}

/// A consumer-protocol group (KIP-848) as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    /// Empty, Assigning, Reconciling or Stable.
    pub state: String,
    /// The group epoch: bumped by every membership, subscription or metadata change.
    pub epoch: i32,
    /// The epoch of the target assignment.
    pub assignment_epoch: i32,
    /// The broker-side assignor.
    pub assignor: String,
    /// The members.
    pub members: Vec<ConsumerGroupMember>,
}

/// One member of a consumer-protocol group.
#[derive(Debug, Clone)]
pub struct ConsumerGroupMember {
    /// Member id.
    pub id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// The client's `client.id`.
    pub client_id: String,
    /// Member epoch: equal to the assignment epoch once the member has reconciled.
    pub epoch: i32,
    /// Client address.
    pub host: String,
    /// What the member owns now, by topic.
    pub assignment: Vec<(String, Vec<i32>)>,
    /// What it is moving towards.
    pub target: Vec<(String, Vec<i32>)>,
}

/// `group` described with ConsumerGroupDescribe (KIP-848); `None` if the coordinator does not
/// support it or the group is not a consumer-protocol group (a classic group, or unknown).
pub async fn consumer_group(brokers: &str, group: &str) -> Result<Option<ConsumerGroup>> {
    use kafka_protocol::messages::consumer_group_describe_response::Assignment;
    use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse};
    let mut bootstrap = bootstrap(brokers).await?;
    let addr = coordinator(&mut bootstrap, group, 0).await?;
    let mut c = Connection::open(&addr).await?;
    let Ok(v) = c.version(ApiKey::ConsumerGroupDescribe, 1) else {
        return Ok(None);
    };
    let req = ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
    let resp: ConsumerGroupDescribeResponse =
        c.send(ApiKey::ConsumerGroupDescribe, v, &req).await?;
    let Some(g) = resp.groups.into_iter().next().filter(|g| g.error_code == 0) else {
        return Ok(None);
    };
    let parts = |a: &Assignment| -> Vec<(String, Vec<i32>)> {
        let mut v: Vec<(String, Vec<i32>)> = a
            .topic_partitions
            .iter()
            .map(|t| {
                let mut ps = t.partitions.clone();
                ps.sort_unstable();
                (t.topic_name.0.to_string(), ps)
            })
            .collect();
        v.sort();
        v
    };
    Ok(Some(ConsumerGroup {
        state: g.group_state.to_string(),
        epoch: g.group_epoch,
        assignment_epoch: g.assignment_epoch,
        assignor: g.assignor_name.to_string(),
        members: g
            .members
            .iter()
            .map(|m| ConsumerGroupMember {
                id: m.member_id.to_string(),
                instance_id: m.instance_id.as_ref().map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                epoch: m.member_epoch,
                host: m.client_host.to_string(),
                assignment: parts(&m.assignment),
                target: parts(&m.target_assignment),
            })
            .collect(),
    }))
}

/// Every group's type ("classic" or "consumer") and state, from ListGroups v5 (KIP-848); empty
/// if the broker's ListGroups is older.
pub async fn group_types(brokers: &str) -> Result<Vec<(String, String, String)>> {
    use kafka_protocol::messages::{ListGroupsRequest, ListGroupsResponse};
    let mut c = bootstrap(brokers).await?;
    let v = c.version(ApiKey::ListGroups, 5)?;
    if v < 5 {
        return Ok(Vec::new());
    }
    let resp: ListGroupsResponse = c
        .send(ApiKey::ListGroups, v, &ListGroupsRequest::default())
        .await?;
    Ok(resp
        .groups
        .into_iter()
        .map(|g| {
            (
                g.group_id.0.to_string(),
                g.group_type.to_string(),
                g.group_state.to_string(),
            )
        })
        .collect())
}
