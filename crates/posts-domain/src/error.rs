//! The post's rule violations: the crate's one error type.

use std::fmt;

use uuid::Uuid;

/// Something a caller tried on a deleted post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostAction {
    /// `EditMessage`.
    EditMessage,
    /// `LikePost`.
    Like,
    /// `AddComment`.
    AddComment,
    /// `EditComment`.
    EditComment,
    /// `RemoveComment`.
    RemoveComment,
}

impl fmt::Display for PostAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PostAction::EditMessage => "edit the message of",
            PostAction::Like => "like",
            PostAction::AddComment => "add a comment to",
            PostAction::EditComment => "edit a comment of",
            PostAction::RemoveComment => "remove a comment of",
        })
    }
}

/// How a caller should see an error: what an HTTP layer maps to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The post or comment does not exist (404).
    NotFound,
    /// The request itself is invalid, such as an empty text (400).
    Invalid,
    /// The caller is not the author of what they try to change (403).
    Forbidden,
    /// The post's state does not allow it: deleted, or already exists (409).
    Conflict,
}

/// Why the post aggregate refused a command. The messages are meant for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PostError {
    /// No post has this id.
    #[error("no post has this id")]
    NotFound,
    /// `NewPost` on an id that is taken.
    #[error("a post with this id already exists")]
    AlreadyExists,
    /// A post needs an author.
    #[error("the author must not be empty")]
    EmptyAuthor,
    /// A post's message must have text.
    #[error("the message of a post must not be empty")]
    EmptyMessage,
    /// A comment must have text.
    #[error("a comment must not be empty")]
    EmptyComment,
    /// A comment needs a username.
    #[error("the username must not be empty")]
    EmptyUsername,
    /// Edits, likes and comments are refused once a post is deleted.
    #[error("you cannot {0} a deleted post")]
    PostDeleted(PostAction),
    /// The post has no (remaining) comment with this id.
    #[error("the post has no comment {0}")]
    CommentNotFound(Uuid),
    /// `AddComment` with the id of an existing comment.
    #[error("the post already has a comment {0}")]
    CommentExists(Uuid),
    /// Only a comment's author may edit or remove it.
    #[error("only the author of a comment may {0} it")]
    NotCommentAuthor(&'static str),
    /// Only a post's author may delete it.
    #[error("only the author of a post may delete it")]
    NotPostAuthor,
    /// A post is deleted once.
    #[error("the post has already been deleted")]
    AlreadyDeleted,
    /// A text is longer than its bound (see [`crate::limits`]): its event must fit on the topic.
    #[error("the {field} is longer than {max} characters")]
    TooLong {
        /// Which text: `message`, `comment`, `author` or `username`.
        field: &'static str,
        /// Its bound, in characters.
        max: usize,
    },
}

impl PostError {
    /// How the caller should see it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PostError::NotFound | PostError::CommentNotFound(_) => ErrorKind::NotFound,
            PostError::EmptyAuthor
            | PostError::EmptyMessage
            | PostError::EmptyComment
            | PostError::EmptyUsername
            | PostError::TooLong { .. } => ErrorKind::Invalid,
            PostError::NotCommentAuthor(_) | PostError::NotPostAuthor => ErrorKind::Forbidden,
            PostError::AlreadyExists
            | PostError::PostDeleted(_)
            | PostError::CommentExists(_)
            | PostError::AlreadyDeleted => ErrorKind::Conflict,
        }
    }

    /// A stable machine-readable code, for `{"error":{"code":…}}`.
    pub fn code(&self) -> &'static str {
        match self {
            PostError::NotFound => "post_not_found",
            PostError::AlreadyExists => "post_exists",
            PostError::EmptyAuthor => "empty_author",
            PostError::EmptyMessage => "empty_message",
            PostError::EmptyComment => "empty_comment",
            PostError::EmptyUsername => "empty_username",
            PostError::PostDeleted(_) => "post_deleted",
            PostError::CommentNotFound(_) => "comment_not_found",
            PostError::CommentExists(_) => "comment_exists",
            PostError::NotCommentAuthor(_) => "not_comment_author",
            PostError::NotPostAuthor => "not_post_author",
            PostError::AlreadyDeleted => "post_already_deleted",
            PostError::TooLong { .. } => "too_long",
        }
    }
}
