//! Where the read side reads stored events from: the command service's event feed over HTTP
//! (the query service, which never opens the command service's database), or the event store
//! itself (`ferry replay posts`, a tool run next to the databases). Both serve the same events
//! in the same order, so the rebuild and the gap catch-up have one code path for both.

use std::time::Duration;

use ferry_es::{Aggregate, EventStore, Recorded};
use ferry_toolkit::sql::Database;
use posts_domain::{Post, PostEvent};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::Error;
use crate::wire::{FeedCount, FeedEvent, FeedPage, MAX_PAGE};

/// A source of stored post events. Cheap to clone.
#[derive(Clone)]
pub struct EventSource {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Store(EventStore),
    Feed {
        base: String,
        client: reqwest::Client,
    },
}

impl std::fmt::Debug for EventSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Store(store) => f.debug_tuple("EventSource::Store").field(store).finish(),
            Inner::Feed { base, .. } => f.debug_tuple("EventSource::Feed").field(base).finish(),
        }
    }
}

impl EventSource {
    /// The event store in `db`, the command service's database (its tables are created if
    /// missing, so an empty database is an empty store).
    pub async fn event_store(db: Database) -> Result<EventSource, Error> {
        ferry_es::migrate(&db).await?;
        Ok(EventSource {
            inner: Inner::Store(EventStore::new(db)),
        })
    }

    /// The event feed of the command service at `base_url` (`http://127.0.0.1:5010`).
    pub fn feed(base_url: impl Into<String>) -> EventSource {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            // Under the command service's idle timeout (60 s, `ferry_service::HttpLimits`), so a
            // page is never asked for on a connection the service is just closing.
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        EventSource {
            inner: Inner::Feed {
                base: base_url.into().trim_end_matches('/').to_owned(),
                client,
            },
        }
    }

    /// How many post events are stored after global position `after`.
    pub(crate) async fn count(&self, after: i64) -> Result<u64, Error> {
        match &self.inner {
            Inner::Store(store) => Ok(store.count_after(Post::TYPE, after).await?),
            Inner::Feed { .. } => {
                let count: FeedCount = self
                    .get(&format!("/api/v1/EventFeed/count?after={after}"))
                    .await?;
                Ok(count.count)
            }
        }
    }

    /// Up to `limit` post events after global position `after`, in global order.
    pub(crate) async fn page(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Recorded<PostEvent>>, Error> {
        match &self.inner {
            Inner::Store(store) => Ok(store.read_all(Post::TYPE, after, limit).await?),
            Inner::Feed { .. } => {
                let page: FeedPage = self
                    .get(&format!(
                        "/api/v1/EventFeed?after={after}&limit={}",
                        limit.min(MAX_PAGE)
                    ))
                    .await?;
                decode(page)
            }
        }
    }

    /// Up to `limit` events of one post after version `after_version`, in order.
    pub(crate) async fn stream(
        &self,
        post_id: Uuid,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<Recorded<PostEvent>>, Error> {
        match &self.inner {
            Inner::Store(store) => Ok(store
                .read_stream_page(&post_id.to_string(), after_version, limit)
                .await?),
            Inner::Feed { .. } => {
                let page: FeedPage = self
                    .get(&format!(
                        "/api/v1/EventFeed/byPost/{post_id}?afterVersion={after_version}&limit={}",
                        limit.min(MAX_PAGE)
                    ))
                    .await?;
                decode(page)
            }
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let Inner::Feed { base, client } = &self.inner else {
            unreachable!("only the feed is read over HTTP")
        };
        let url = format!("{base}{path}");
        let failed = |reason: String| Error::Feed {
            url: url.clone(),
            reason,
        };
        let response = client
            .get(&url)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(failed(format!("{status}: {body}")));
        }
        response.json().await.map_err(|e| failed(e.to_string()))
    }
}

fn decode(page: FeedPage) -> Result<Vec<Recorded<PostEvent>>, Error> {
    page.events
        .into_iter()
        .map(|e: FeedEvent| {
            let (stream_id, version, event_type) =
                (e.stream_id.clone(), e.version, e.event_type.clone());
            e.into_recorded().map_err(|source| Error::Decode {
                stream_id,
                version,
                event_type,
                source,
            })
        })
        .collect()
}
