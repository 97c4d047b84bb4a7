//! The post events: one struct per event, each a [`Message`] (type = the event's name, key =
//! the post id) so it goes through the outbox to [`TOPIC`] as is, and [`PostEvent`], the
//! aggregate's event type.
//!
//! The JSON field names are camelCase (`postId`, `datePosted`), the event names those of the
//! original service. Times are milliseconds since the Unix epoch.

use ferry_es::{Event, Outbox};
use ferry_toolkit::Message;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The topic post events are published to.
pub const TOPIC: &str = "SocialMediaPostEvents";

/// A post was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostCreated {
    /// The post.
    pub post_id: Uuid,
    /// Who wrote it.
    pub author: String,
    /// Its text.
    pub message: String,
    /// When, in Unix epoch milliseconds.
    pub date_posted: i64,
}

/// A post's text was replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageUpdated {
    /// The post.
    pub post_id: Uuid,
    /// The new text.
    pub message: String,
}

/// A post was liked once more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostLiked {
    /// The post.
    pub post_id: Uuid,
}

/// A comment was added to a post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommentAdded {
    /// The post.
    pub post_id: Uuid,
    /// The new comment's id.
    pub comment_id: Uuid,
    /// Its text.
    pub comment: String,
    /// Who wrote it.
    pub username: String,
    /// When, in Unix epoch milliseconds.
    pub comment_date: i64,
}

/// A comment's text was replaced by its author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommentUpdated {
    /// The post.
    pub post_id: Uuid,
    /// The comment.
    pub comment_id: Uuid,
    /// The new text.
    pub comment: String,
    /// Who edited it (its author).
    pub username: String,
    /// When, in Unix epoch milliseconds.
    pub edit_date: i64,
}

/// A comment was removed by its author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommentRemoved {
    /// The post.
    pub post_id: Uuid,
    /// The comment.
    pub comment_id: Uuid,
}

/// A post was deleted by its author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostRemoved {
    /// The post.
    pub post_id: Uuid,
}

/// Declares the event structs as messages and as variants of [`PostEvent`], so the type name,
/// the variant name and the event type stored can never disagree.
macro_rules! post_events {
    ($($name:ident),* $(,)?) => {
        $(
            impl Message for $name {
                ferry_toolkit::schema_from_schemars!();
                const TYPE: &'static str = stringify!($name);
                fn key(&self) -> String {
                    self.post_id.to_string()
                }
            }

            impl From<$name> for PostEvent {
                fn from(event: $name) -> PostEvent {
                    PostEvent::$name(event)
                }
            }
        )*

        /// Everything that can happen to a post: the post aggregate's event type.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        #[allow(clippy::enum_variant_names)]
        pub enum PostEvent {
            $(
                #[doc = concat!("See [`", stringify!($name), "`].")]
                $name($name),
            )*
        }

        impl PostEvent {
            /// The post the event is about.
            pub fn post_id(&self) -> Uuid {
                match self {
                    $(PostEvent::$name(e) => e.post_id,)*
                }
            }
        }

        impl Event for PostEvent {
            fn event_type(&self) -> &'static str {
                match self {
                    $(PostEvent::$name(_) => <$name as Message>::TYPE,)*
                }
            }

            fn schema_version(&self) -> u32 {
                match self {
                    $(PostEvent::$name(_) => <$name as Message>::VERSION,)*
                }
            }

            async fn publish(&self, outbox: &mut Outbox<'_>) -> ferry_es::Result<()> {
                match self {
                    $(PostEvent::$name(e) => outbox.enqueue(e).await,)*
                }
            }
        }
    };
}

post_events!(
    PostCreated,
    MessageUpdated,
    PostLiked,
    CommentAdded,
    CommentUpdated,
    CommentRemoved,
    PostRemoved,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_payload_is_the_message_json_and_round_trips() {
        let post_id = Uuid::nil();
        let event = PostEvent::from(CommentAdded {
            post_id,
            comment_id: Uuid::from_u128(7),
            comment: "nice".into(),
            username: "bob".into(),
            comment_date: 1_700_000_000_000,
        });
        assert_eq!(event.event_type(), "CommentAdded");
        let payload = event.to_payload().unwrap();
        let PostEvent::CommentAdded(inner) = &event else {
            unreachable!()
        };
        assert_eq!(payload, serde_json::to_value(inner).unwrap());
        assert_eq!(
            payload,
            serde_json::json!({
                "postId": "00000000-0000-0000-0000-000000000000",
                "commentId": "00000000-0000-0000-0000-000000000007",
                "comment": "nice",
                "username": "bob",
                "commentDate": 1_700_000_000_000_i64,
            })
        );
        assert_eq!(
            PostEvent::from_payload("CommentAdded", payload).unwrap(),
            event
        );
        assert_eq!(inner.key(), post_id.to_string());
    }
}
