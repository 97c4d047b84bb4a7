//! Given/when/then tests for every rule of the post aggregate.

use ferry_es::testing::{given, given_no_previous_events};
use posts_domain::{
    CommentAdded, CommentRemoved, CommentUpdated, ErrorKind, MessageUpdated, Post, PostAction,
    PostCommand, PostCreated, PostError, PostEvent, PostLiked, PostRemoved,
};
use uuid::Uuid;

const POST: Uuid = Uuid::from_u128(1);
const COMMENT: Uuid = Uuid::from_u128(2);
const T: i64 = 1_700_000_000_000;

fn created() -> PostEvent {
    PostCreated {
        post_id: POST,
        author: "alice".into(),
        message: "hello".into(),
        date_posted: T,
    }
    .into()
}

fn commented() -> PostEvent {
    CommentAdded {
        post_id: POST,
        comment_id: COMMENT,
        comment: "nice".into(),
        username: "bob".into(),
        comment_date: T + 1,
    }
    .into()
}

fn removed() -> PostEvent {
    PostRemoved { post_id: POST }.into()
}

fn edit_message(message: &str) -> PostCommand {
    PostCommand::EditMessage {
        message: message.into(),
    }
}

fn add_comment(comment: &str, username: &str) -> PostCommand {
    PostCommand::AddComment {
        comment_id: COMMENT,
        comment: comment.into(),
        username: username.into(),
        at: T + 1,
    }
}

fn edit_comment(comment: &str, username: &str) -> PostCommand {
    PostCommand::EditComment {
        comment_id: COMMENT,
        comment: comment.into(),
        username: username.into(),
        at: T + 2,
    }
}

fn remove_comment(username: &str) -> PostCommand {
    PostCommand::RemoveComment {
        comment_id: COMMENT,
        username: username.into(),
    }
}

fn delete(username: &str) -> PostCommand {
    PostCommand::DeletePost {
        username: username.into(),
    }
}

/// Given `past`, when `command`, then `expected` (events or the refusal).
#[track_caller]
fn check(
    past: impl IntoIterator<Item = PostEvent>,
    command: PostCommand,
    expected: Result<Vec<PostEvent>, PostError>,
) {
    let then = given::<Post>(past).when(command);
    match expected {
        Ok(events) => {
            then.then_expect_events(events);
        }
        Err(error) => then.then_expect_error(error),
    }
}

#[test]
fn new_post_creates_it_once_with_an_author_and_a_message() {
    let new = |author: &str, message: &str| PostCommand::NewPost {
        post_id: POST,
        author: author.into(),
        message: message.into(),
        at: T,
    };
    check([], new("alice", "hello"), Ok(vec![created()]));
    check([], new("alice", ""), Err(PostError::EmptyMessage));
    check([], new("alice", "  \n"), Err(PostError::EmptyMessage));
    check([], new("", "hello"), Err(PostError::EmptyAuthor));
    check(
        [created()],
        new("alice", "again"),
        Err(PostError::AlreadyExists),
    );
}

#[test]
fn texts_longer_than_their_bound_are_refused_so_every_event_fits_the_topic() {
    use posts_domain::limits;
    let long = |n: usize| "é".repeat(n);
    let new = |author: String, message: String| PostCommand::NewPost {
        post_id: POST,
        author,
        message,
        at: T,
    };
    let too_long = |field, max| Err(PostError::TooLong { field, max });
    // At the bound (in characters, not bytes) is fine; one more is not.
    let at_bound = new("alice".into(), long(limits::MESSAGE));
    assert!(given::<Post>([]).when(at_bound).into_result().is_ok());
    check(
        [],
        new("alice".into(), long(limits::MESSAGE + 1)),
        too_long("message", limits::MESSAGE),
    );
    check(
        [],
        new(long(limits::NAME + 1), "hi".into()),
        too_long("author", limits::NAME),
    );
    check(
        [created()],
        edit_message(&long(limits::MESSAGE + 1)),
        too_long("message", limits::MESSAGE),
    );
    check(
        [created()],
        add_comment(&long(limits::COMMENT + 1), "bob"),
        too_long("comment", limits::COMMENT),
    );
    check(
        [created()],
        add_comment("nice", &long(limits::NAME + 1)),
        too_long("username", limits::NAME),
    );
    check(
        [created(), commented()],
        edit_comment(&long(limits::COMMENT + 1), "bob"),
        too_long("comment", limits::COMMENT),
    );
    assert_eq!(
        PostError::TooLong {
            field: "message",
            max: 5
        }
        .kind(),
        ErrorKind::Invalid
    );
}

#[test]
fn every_command_on_an_unknown_post_is_not_found() {
    for command in [
        edit_message("x"),
        PostCommand::LikePost,
        add_comment("x", "bob"),
        edit_comment("x", "bob"),
        remove_comment("bob"),
        delete("alice"),
    ] {
        check([], command, Err(PostError::NotFound));
    }
    assert_eq!(PostError::NotFound.kind(), ErrorKind::NotFound);
}

#[test]
fn edit_message_needs_a_live_post_and_text() {
    check(
        [created()],
        edit_message("changed"),
        Ok(vec![
            MessageUpdated {
                post_id: POST,
                message: "changed".into(),
            }
            .into(),
        ]),
    );
    check([created()], edit_message(""), Err(PostError::EmptyMessage));
    check(
        [created(), removed()],
        edit_message("changed"),
        Err(PostError::PostDeleted(PostAction::EditMessage)),
    );
}

#[test]
fn like_needs_a_live_post_and_counts_each_like() {
    let state = given::<Post>([created(), PostLiked { post_id: POST }.into()])
        .when(PostCommand::LikePost)
        .then_expect_events([PostLiked { post_id: POST }.into()]);
    assert_eq!(state.likes, 2);
    check(
        [created(), removed()],
        PostCommand::LikePost,
        Err(PostError::PostDeleted(PostAction::Like)),
    );
}

#[test]
fn add_comment_needs_a_live_post_text_and_a_username() {
    let state = given::<Post>([created()])
        .when(add_comment("nice", "bob"))
        .then_expect_events([commented()]);
    assert_eq!(state.comments[&COMMENT].username, "bob");
    check(
        [created()],
        add_comment("", "bob"),
        Err(PostError::EmptyComment),
    );
    check(
        [created()],
        add_comment("nice", " "),
        Err(PostError::EmptyUsername),
    );
    check(
        [created(), removed()],
        add_comment("nice", "bob"),
        Err(PostError::PostDeleted(PostAction::AddComment)),
    );
    check(
        [created(), commented()],
        add_comment("again", "bob"),
        Err(PostError::CommentExists(COMMENT)),
    );
}

#[test]
fn only_the_comment_author_edits_it_case_insensitively() {
    let updated = |username: &str| -> PostEvent {
        CommentUpdated {
            post_id: POST,
            comment_id: COMMENT,
            comment: "better".into(),
            username: username.into(),
            edit_date: T + 2,
        }
        .into()
    };
    check(
        [created(), commented()],
        edit_comment("better", "bob"),
        Ok(vec![updated("bob")]),
    );
    check(
        [created(), commented()],
        edit_comment("better", "BoB"),
        Ok(vec![updated("BoB")]),
    );
    check(
        [created(), commented()],
        edit_comment("better", "alice"),
        Err(PostError::NotCommentAuthor("edit")),
    );
    check(
        [created(), commented()],
        edit_comment("", "bob"),
        Err(PostError::EmptyComment),
    );
    check(
        [created()],
        edit_comment("better", "bob"),
        Err(PostError::CommentNotFound(COMMENT)),
    );
    check(
        [created(), commented(), removed()],
        edit_comment("better", "bob"),
        Err(PostError::PostDeleted(PostAction::EditComment)),
    );
    let state = given::<Post>([created(), commented()])
        .when(edit_comment("better", "bob"))
        .then_expect_events([updated("bob")]);
    assert!(state.comments[&COMMENT].edited);
    assert_eq!(state.comments[&COMMENT].comment, "better");
    assert_eq!(
        PostError::NotCommentAuthor("edit").kind(),
        ErrorKind::Forbidden
    );
}

#[test]
fn only_the_comment_author_removes_it_and_only_once() {
    let comment_removed: PostEvent = CommentRemoved {
        post_id: POST,
        comment_id: COMMENT,
    }
    .into();
    check(
        [created(), commented()],
        remove_comment("BOB"),
        Ok(vec![comment_removed.clone()]),
    );
    check(
        [created(), commented()],
        remove_comment("alice"),
        Err(PostError::NotCommentAuthor("remove")),
    );
    check(
        [created(), commented(), comment_removed.clone()],
        remove_comment("bob"),
        Err(PostError::CommentNotFound(COMMENT)),
    );
    check(
        [created(), commented(), comment_removed],
        edit_comment("better", "bob"),
        Err(PostError::CommentNotFound(COMMENT)),
    );
    check(
        [created(), commented(), removed()],
        remove_comment("bob"),
        Err(PostError::PostDeleted(PostAction::RemoveComment)),
    );
}

#[test]
fn only_the_post_author_deletes_it_and_only_once() {
    check([created()], delete("alice"), Ok(vec![removed()]));
    check([created()], delete("ALICE"), Ok(vec![removed()]));
    check([created()], delete("bob"), Err(PostError::NotPostAuthor));
    check([created()], delete(""), Err(PostError::NotPostAuthor));
    check(
        [created(), removed()],
        delete("alice"),
        Err(PostError::AlreadyDeleted),
    );
    // Deleting twice is refused whoever asks.
    check(
        [created(), removed()],
        delete("bob"),
        Err(PostError::AlreadyDeleted),
    );
    let state = given::<Post>([created()])
        .when(delete("alice"))
        .then_expect_events([removed()]);
    assert!(state.deleted);
}

#[test]
fn errors_read_as_sentences_with_stable_codes() {
    given::<Post>([created(), removed()])
        .when(PostCommand::LikePost)
        .then_expect_error_message("you cannot like a deleted post");
    given_no_previous_events::<Post>()
        .when(edit_message("x"))
        .then_expect_error_message("no post has this id");
    given::<Post>([created(), commented()])
        .when(edit_comment("x", "eve"))
        .then_expect_error_message("only the author of a comment may edit it");
    assert_eq!(PostError::AlreadyDeleted.code(), "post_already_deleted");
    assert_eq!(PostError::EmptyMessage.kind(), ErrorKind::Invalid);
    assert_eq!(PostError::AlreadyDeleted.kind(), ErrorKind::Conflict);
}

#[test]
fn constructors_fill_fresh_ids_and_times() {
    let PostCommand::AddComment { comment_id, at, .. } = PostCommand::add_comment("c", "u") else {
        unreachable!()
    };
    assert_eq!(comment_id.get_version_num(), 7);
    assert!(at > T);
    let PostCommand::NewPost { post_id, .. } = PostCommand::new_post("a", "m") else {
        unreachable!()
    };
    assert_ne!(post_id, Uuid::nil());
}
