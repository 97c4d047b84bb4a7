//! The social post aggregate of the SM-POST reference system (CQRS + event sourcing): its
//! commands, events and rules, on `ferry-es`. No I/O: the command service runs it through a
//! `ferry_es::CommandHandler` with the outbox topic [`TOPIC`], the query service projects its
//! events.
//!
//! The rules:
//! - no edits, likes or comments on a deleted post;
//! - an empty message or comment (or author, or username) is refused, and so is one longer than
//!   its bound in [`limits`] (every event must fit in one Kafka record);
//! - only a comment's author edits or removes it (usernames compared case-insensitively);
//! - only the post's author deletes it, and only once.
//!
//! Commands carry their ids and times (see the constructors on [`PostCommand`]) so that
//! `decide` stays pure: the handler can decide again after a concurrency conflict and get the
//! same comment id, and tests state exact events.

mod error;
mod events;

/// The longest texts a post accepts, in characters. Each event carries at most one of the long
/// ones, so with JSON escaping every event stays far below Kafka's default 1 MiB record limit.
pub mod limits {
    /// A post's message.
    pub const MESSAGE: usize = 10_000;
    /// A comment.
    pub const COMMENT: usize = 2_000;
    /// An author's or commenter's name.
    pub const NAME: usize = 100;
}

use std::collections::BTreeMap;

use ferry_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use error::{ErrorKind, PostAction, PostError};
pub use events::{
    CommentAdded, CommentRemoved, CommentUpdated, MessageUpdated, PostCreated, PostEvent,
    PostLiked, PostRemoved, TOPIC,
};

/// `Result` with [`PostError`] as the default error.
pub type Result<T, E = PostError> = std::result::Result<T, E>;

/// What a caller can ask of a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostCommand {
    /// Write a new post (the stream id is `post_id`).
    NewPost {
        /// The new post's id.
        post_id: Uuid,
        /// Who writes it.
        author: String,
        /// Its text.
        message: String,
        /// When, in Unix epoch milliseconds.
        at: i64,
    },
    /// Replace the post's text.
    EditMessage {
        /// The new text.
        message: String,
    },
    /// Like the post.
    LikePost,
    /// Comment on the post.
    AddComment {
        /// The new comment's id, which the caller answers with.
        comment_id: Uuid,
        /// Its text.
        comment: String,
        /// Who writes it.
        username: String,
        /// When, in Unix epoch milliseconds.
        at: i64,
    },
    /// Replace a comment's text (its author only).
    EditComment {
        /// The comment.
        comment_id: Uuid,
        /// The new text.
        comment: String,
        /// Who asks.
        username: String,
        /// When, in Unix epoch milliseconds.
        at: i64,
    },
    /// Remove a comment (its author only).
    RemoveComment {
        /// The comment.
        comment_id: Uuid,
        /// Who asks.
        username: String,
    },
    /// Delete the post (its author only, once).
    DeletePost {
        /// Who asks.
        username: String,
    },
}

impl PostCommand {
    /// `NewPost` with a fresh post id (UUID v7) and the current time.
    pub fn new_post(author: impl Into<String>, message: impl Into<String>) -> PostCommand {
        PostCommand::NewPost {
            post_id: Uuid::now_v7(),
            author: author.into(),
            message: message.into(),
            at: ferry_toolkit::now_millis(),
        }
    }

    /// `AddComment` with a fresh comment id (UUID v7) and the current time.
    pub fn add_comment(comment: impl Into<String>, username: impl Into<String>) -> PostCommand {
        PostCommand::AddComment {
            comment_id: Uuid::now_v7(),
            comment: comment.into(),
            username: username.into(),
            at: ferry_toolkit::now_millis(),
        }
    }

    /// `EditComment` at the current time.
    pub fn edit_comment(
        comment_id: Uuid,
        comment: impl Into<String>,
        username: impl Into<String>,
    ) -> PostCommand {
        PostCommand::EditComment {
            comment_id,
            comment: comment.into(),
            username: username.into(),
            at: ferry_toolkit::now_millis(),
        }
    }
}

/// A comment as the aggregate keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Who wrote it.
    pub username: String,
    /// Its text.
    pub comment: String,
    /// When it was written, Unix epoch milliseconds.
    pub comment_date: i64,
    /// Whether it was edited.
    pub edited: bool,
}

/// The post aggregate's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    /// The post's id; `None` until it is created.
    pub id: Option<Uuid>,
    /// Who wrote it.
    pub author: String,
    /// Its text.
    pub message: String,
    /// When it was written, Unix epoch milliseconds.
    pub date_posted: i64,
    /// How many likes it has.
    pub likes: u64,
    /// Its comments that were not removed, by id.
    pub comments: BTreeMap<Uuid, Comment>,
    /// Whether its author deleted it.
    pub deleted: bool,
}

impl Post {
    fn active(&self, action: PostAction) -> Result<()> {
        if self.deleted {
            Err(PostError::PostDeleted(action))
        } else {
            Ok(())
        }
    }

    fn own_comment(&self, comment_id: Uuid, username: &str, verb: &'static str) -> Result<()> {
        let comment = self
            .comments
            .get(&comment_id)
            .ok_or(PostError::CommentNotFound(comment_id))?;
        if same_user(&comment.username, username) {
            Ok(())
        } else {
            Err(PostError::NotCommentAuthor(verb))
        }
    }
}

impl Aggregate for Post {
    /// The original service's aggregate type.
    const TYPE: &'static str = "PostAggregate";
    type Command = PostCommand;
    type Event = PostEvent;
    type Error = PostError;

    fn decide(&self, command: &PostCommand) -> Result<Vec<PostEvent>> {
        if let PostCommand::NewPost {
            post_id,
            author,
            message,
            at,
        } = command
        {
            if self.id.is_some() {
                return Err(PostError::AlreadyExists);
            }
            text(author, PostError::EmptyAuthor, "author", limits::NAME)?;
            text(message, PostError::EmptyMessage, "message", limits::MESSAGE)?;
            return Ok(vec![
                PostCreated {
                    post_id: *post_id,
                    author: author.clone(),
                    message: message.clone(),
                    date_posted: *at,
                }
                .into(),
            ]);
        }
        let post_id = self.id.ok_or(PostError::NotFound)?;
        let event: PostEvent = match command {
            PostCommand::NewPost { .. } => unreachable!("handled above"),
            PostCommand::EditMessage { message } => {
                self.active(PostAction::EditMessage)?;
                text(message, PostError::EmptyMessage, "message", limits::MESSAGE)?;
                MessageUpdated {
                    post_id,
                    message: message.clone(),
                }
                .into()
            }
            PostCommand::LikePost => {
                self.active(PostAction::Like)?;
                PostLiked { post_id }.into()
            }
            PostCommand::AddComment {
                comment_id,
                comment,
                username,
                at,
            } => {
                self.active(PostAction::AddComment)?;
                text(comment, PostError::EmptyComment, "comment", limits::COMMENT)?;
                text(username, PostError::EmptyUsername, "username", limits::NAME)?;
                if self.comments.contains_key(comment_id) {
                    return Err(PostError::CommentExists(*comment_id));
                }
                CommentAdded {
                    post_id,
                    comment_id: *comment_id,
                    comment: comment.clone(),
                    username: username.clone(),
                    comment_date: *at,
                }
                .into()
            }
            PostCommand::EditComment {
                comment_id,
                comment,
                username,
                at,
            } => {
                self.active(PostAction::EditComment)?;
                text(comment, PostError::EmptyComment, "comment", limits::COMMENT)?;
                self.own_comment(*comment_id, username, "edit")?;
                CommentUpdated {
                    post_id,
                    comment_id: *comment_id,
                    comment: comment.clone(),
                    username: username.clone(),
                    edit_date: *at,
                }
                .into()
            }
            PostCommand::RemoveComment {
                comment_id,
                username,
            } => {
                self.active(PostAction::RemoveComment)?;
                self.own_comment(*comment_id, username, "remove")?;
                CommentRemoved {
                    post_id,
                    comment_id: *comment_id,
                }
                .into()
            }
            PostCommand::DeletePost { username } => {
                if self.deleted {
                    return Err(PostError::AlreadyDeleted);
                }
                if !same_user(&self.author, username) {
                    return Err(PostError::NotPostAuthor);
                }
                PostRemoved { post_id }.into()
            }
        };
        Ok(vec![event])
    }

    fn evolve(&mut self, event: &PostEvent) {
        match event {
            PostEvent::PostCreated(e) => {
                self.id = Some(e.post_id);
                self.author.clone_from(&e.author);
                self.message.clone_from(&e.message);
                self.date_posted = e.date_posted;
            }
            PostEvent::MessageUpdated(e) => self.message.clone_from(&e.message),
            PostEvent::PostLiked(_) => self.likes += 1,
            PostEvent::CommentAdded(e) => {
                self.comments.insert(
                    e.comment_id,
                    Comment {
                        username: e.username.clone(),
                        comment: e.comment.clone(),
                        comment_date: e.comment_date,
                        edited: false,
                    },
                );
            }
            PostEvent::CommentUpdated(e) => {
                if let Some(comment) = self.comments.get_mut(&e.comment_id) {
                    comment.comment.clone_from(&e.comment);
                    comment.edited = true;
                }
            }
            PostEvent::CommentRemoved(e) => {
                self.comments.remove(&e.comment_id);
            }
            PostEvent::PostRemoved(_) => self.deleted = true,
        }
    }
}

/// Usernames are compared case-insensitively (Unicode lower case), as the original did.
fn same_user(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

/// A text that must not be blank (`empty`) nor longer than `max` characters.
fn text(text: &str, empty: PostError, field: &'static str, max: usize) -> Result<()> {
    if text.trim().is_empty() {
        Err(empty)
    } else if text.len() > max && text.chars().count() > max {
        Err(PostError::TooLong { field, max })
    } else {
        Ok(())
    }
}
