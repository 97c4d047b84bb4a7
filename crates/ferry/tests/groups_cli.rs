//! `ferry consume --group` commits what it printed, so the next run resumes after it, and
//! `ferry groups list|describe` show the group with its committed offsets and lag.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::ChildBroker;

fn ferry(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "ferry {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn consume_with_a_group_resumes_and_groups_show_the_lag() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), &[]);
    let b = broker.addr.as_str();
    let lines: String = (1..=10).map(|i| format!("m{i}\n")).collect();
    ferry(&["produce", "gt", "--brokers", b], Some(&lines));

    let first = ferry(
        &[
            "consume",
            "gt",
            "--group",
            "readers",
            "--from-beginning",
            "--count",
            "4",
            "--brokers",
            b,
        ],
        None,
    );
    assert_eq!(first, "m1\nm2\nm3\nm4\n");
    let described = ferry(&["groups", "describe", "readers", "--brokers", b], None);
    let row = described
        .lines()
        .find(|l| l.starts_with("gt "))
        .expect("a row for gt");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols,
        ["gt", "0", "4", "10", "6"],
        "committed 4 of 10, lag 6:\n{described}"
    );

    let rest = ferry(
        &[
            "consume",
            "gt",
            "--group",
            "readers",
            "--count",
            "6",
            "--brokers",
            b,
        ],
        None,
    );
    assert_eq!(
        rest, "m5\nm6\nm7\nm8\nm9\nm10\n",
        "resumed after what was printed"
    );
    let listed = ferry(&["groups", "list", "--brokers", b], None);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("readers ") && l.contains("Empty")),
        "{listed}"
    );
}

/// `--group-protocol consumer` (KIP-848): the group resumes the same way, and `groups describe`
/// shows the protocol and each member's epoch and assignment; `groups list` its type.
#[test]
fn consumer_protocol_group_resumes_and_describe_shows_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), &[]);
    let b = broker.addr.as_str();
    let lines: String = (1..=10).map(|i| format!("m{i}\n")).collect();
    ferry(&["produce", "kt", "--brokers", b], Some(&lines));
    let consume = |count: &str, extra: &[&str]| {
        let mut args = vec![
            "consume",
            "kt",
            "--group",
            "kreaders",
            "--group-protocol",
            "consumer",
            "--count",
            count,
            "--brokers",
            b,
        ];
        args.extend_from_slice(extra);
        ferry(&args, None)
    };
    assert_eq!(consume("4", &["--from-beginning"]), "m1\nm2\nm3\nm4\n");
    assert_eq!(consume("6", &[]), "m5\nm6\nm7\nm8\nm9\nm10\n");

    // A live member, to describe.
    let mut member = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "consume",
            "kt",
            "--group",
            "kreaders",
            "--group-protocol",
            "consumer",
            "--brokers",
            b,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let described = loop {
        let d = ferry(&["groups", "describe", "kreaders", "--brokers", b], None);
        if d.contains("state Stable") || std::time::Instant::now() > deadline {
            break d;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    member.kill().unwrap();
    member.wait().unwrap();
    assert!(
        described.contains("protocol consumer (KIP-848), state Stable"),
        "{described}"
    );
    let row = described
        .lines()
        .find(|l| l.contains("kt[0]"))
        .expect("a member row with its assignment");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert!(
        cols[1].parse::<i32>().unwrap() >= 1,
        "the member's epoch: {row}"
    );
    let offsets = described
        .lines()
        .find(|l| l.starts_with("kt "))
        .expect("a row for kt");
    assert_eq!(
        offsets.split_whitespace().collect::<Vec<_>>(),
        ["kt", "0", "10", "10", "0"]
    );
    let listed = ferry(&["groups", "list", "--brokers", b], None);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("kreaders ") && l.contains(" consumer ")),
        "{listed}"
    );
}
