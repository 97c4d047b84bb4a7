//! What the two halves exchange besides the events themselves: the command service's event
//! feed (JSON over HTTP, read-only) and the request to rebuild the read model (a message).
//!
//! The feed is how the query service reads the event store without reading the command
//! service's tables: `GET /api/v1/EventFeed?after=<position>&limit=<n>` pages through every
//! stored post event in global order, `GET /api/v1/EventFeed/byPost/{id}?afterVersion=<v>`
//! through one post's, and `GET /api/v1/EventFeed/count?after=<position>` counts what is left.
//! Each event is served as stored (upcast to the current schema): its position, post, version,
//! id, type and the event's JSON, the same JSON as on the topic.

use ferry_es::{Aggregate, Event, Metadata, Recorded};
use ferry_toolkit::Message;
use posts_domain::{Post, PostEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The topic of [`RestoreRequested`]: the command service's `RestoreReadDb` asks the query
/// service through it, so neither needs the other's address and any one query replica takes
/// the job.
pub const RESTORE_TOPIC: &str = "SocialMediaPostReadModelRestore";

/// Most events the feed serves per page (`ferry_service::MAX_LIMIT`).
pub(crate) const MAX_PAGE: usize = ferry_service::MAX_LIMIT as usize;

/// One stored event as the feed serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FeedEvent {
    /// Its position in the whole store: increasing in commit order, no gaps.
    pub position: i64,
    /// The post (the stream id).
    pub stream_id: String,
    /// Its version in the post's stream: 1 for `PostCreated`, no gaps.
    pub version: i64,
    /// Its id, also the message id of its message on the topic.
    pub event_id: Uuid,
    /// The event type (`PostLiked`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it was stored, Unix epoch milliseconds.
    pub recorded_at: i64,
    /// The event's JSON, as on the topic.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl FeedEvent {
    pub(crate) fn from_recorded(r: &Recorded<PostEvent>) -> serde_json::Result<FeedEvent> {
        Ok(FeedEvent {
            position: r.position,
            stream_id: r.stream_id.clone(),
            version: r.version,
            event_id: r.event_id,
            event_type: r.event.event_type().to_owned(),
            recorded_at: r.recorded_at,
            data: r.event.to_payload()?,
        })
    }

    pub(crate) fn into_recorded(self) -> serde_json::Result<Recorded<PostEvent>> {
        let event = PostEvent::from_payload(&self.event_type, self.data)?;
        Ok(Recorded {
            event_id: self.event_id,
            stream_id: self.stream_id,
            aggregate_type: Post::TYPE.to_owned(),
            version: self.version,
            position: self.position,
            recorded_at: self.recorded_at,
            // The feed does not serve the commands' correlation and trace: the read model has
            // no use for them.
            metadata: Metadata::default(),
            event,
        })
    }
}

/// A page of the feed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct FeedPage {
    /// The events, in global order (or in version order, for one post).
    pub events: Vec<FeedEvent>,
}

/// How many events the feed has after a position.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct FeedCount {
    /// The number of post events after the position.
    pub count: u64,
}

/// "Rebuild the read model from the event store": staged by the command service's
/// `RestoreReadDb` in its outbox, handled by the query service, which runs it as job
/// `job_id` and reports its progress at `GET /api/v1/RestoreReadDb/{job_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRequested {
    /// The job's id, chosen by the requester.
    pub job_id: Uuid,
    /// Empty the read model first (a rebuild from scratch) rather than only adding what it
    /// lacks.
    #[serde(default)]
    pub reset: bool,
}

impl Message for RestoreRequested {
    ferry_toolkit::schema_from_schemars!();
    const TYPE: &'static str = "RestoreReadDbRequested";
    fn key(&self) -> String {
        self.job_id.to_string()
    }
}
