//! Lists that follow a feed: a read replaces their entries without an acknowledgement, but
//! no series of reads takes out more than half of what a person set, and no read cuts off
//! an address the lockout guard keeps reachable.

use super::*;

/// A list that follows a feed, with `cidrs` set by a person; enabled and acknowledged.
fn fed_list(model: &mut Model, next_id: &mut SequentialIds, cidrs: &[&str]) -> String {
    let input = AllowlistInput {
        source: Some(SourceInput {
            url: "https://user:secret@feeds.example/office.txt".into(),
            format: crate::policy::FeedFormat::Lines,
            refresh: Some("1m".into()),
        }),
        ..input("office", cidrs)
    };
    let id = model
        .create(input, t(0), &settings(), next_id)
        .expect("create")
        .id
        .clone();
    if !cidrs.is_empty() {
        model
            .enable(std::slice::from_ref(&id), &[], false, t(0), &settings())
            .expect("enable");
        model.acknowledge(t(60), &settings()).expect("ack");
    }
    id
}

fn nets(cidrs: &[&str]) -> BTreeSet<IpNet> {
    cidrs.iter().map(|cidr| net(cidr)).collect()
}

fn read(
    model: &mut Model,
    next_id: &mut SequentialIds,
    id: &str,
    cidrs: &[&str],
    guarded: &[GuardedAddress],
) -> Result<Refreshed, ModelError> {
    model.refresh_from_source(id, &nets(cidrs), guarded, t(100), &settings(), next_id)
}

fn cidrs(model: &Model, id: &str) -> BTreeSet<IpNet> {
    let list = model.allowlist(id).expect("list");
    list.entries.iter().map(|entry| entry.cidr).collect()
}

const SET: [&str; 3] = ["192.0.2.2/32", "192.0.2.4/32", "192.0.2.5/32"];
const JUNK: [&str; 4] = [
    "203.0.113.1/32",
    "203.0.113.2/32",
    "203.0.113.3/32",
    "203.0.113.4/32",
];

#[test]
fn two_reads_cannot_take_out_what_one_may_not_and_the_good_feed_comes_back() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = fed_list(&mut model, &mut next_id, &SET);
    let both: Vec<&str> = SET.iter().chain(&JUNK).copied().collect();
    let added = read(&mut model, &mut next_id, &id, &both, &[]).expect("adds only");
    assert_eq!(added.added, 4);
    let refused = read(&mut model, &mut next_id, &id, &JUNK, &[]).expect_err("refused");
    assert_eq!(refused.code(), "feed_refused");
    assert!(
        refused.to_string().contains("0 of the 3 entries"),
        "{refused}"
    );
    assert!(
        !refused.to_string().contains("secret"),
        "no credentials in messages: {refused}"
    );
    assert_eq!(
        cidrs(&model, &id),
        nets(&both),
        "the list keeps its entries"
    );
    let back = read(&mut model, &mut next_id, &id, &SET, &[]).expect("the good feed");
    assert_eq!(back.removed, 4, "what a feed added may go");
    assert_eq!(cidrs(&model, &id), nets(&SET));
    assert_eq!(model.pending(), None, "no acknowledgement asked");
    // One of three may go, then not a second one: counted from what the person set.
    read(&mut model, &mut next_id, &id, &SET[..2], &[]).expect("one of three");
    read(&mut model, &mut next_id, &id, &SET[..1], &[]).expect_err("two of three");
}

#[test]
fn the_first_read_of_a_list_no_person_filled_stands_for_its_entries() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = fed_list(&mut model, &mut next_id, &[]);
    read(&mut model, &mut next_id, &id, &SET, &[]).expect("first read");
    assert_eq!(model.allowlist(&id).expect("list").feed_baseline, 3);
    read(&mut model, &mut next_id, &id, &JUNK, &[]).expect_err("takes out all three");
}

#[test]
fn a_person_setting_the_list_takes_what_the_feed_added_as_theirs() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = fed_list(&mut model, &mut next_id, &SET);
    let both: Vec<&str> = SET.iter().chain(&JUNK).copied().collect();
    read(&mut model, &mut next_id, &id, &both, &[]).expect("adds only");
    model
        .add_entries(
            &id,
            entries(&["198.51.100.1/32"]),
            t(200),
            &settings(),
            &mut next_id,
        )
        .expect("a person adds one");
    let list = model.allowlist(&id).expect("list");
    assert_eq!(list.feed_baseline, 8);
    assert!(list.entries.iter().all(|entry| !entry.from_feed));
    read(&mut model, &mut next_id, &id, &JUNK[..3], &[]).expect_err("five of eight");
}

#[test]
fn a_read_that_would_cut_off_a_guarded_address_is_refused() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = fed_list(&mut model, &mut next_id, &SET);
    let session = [GuardedAddress {
        address: addr("192.0.2.2"),
        found: "session to port 22".into(),
    }];
    let moved = ["192.0.2.4/32", "192.0.2.5/32", "192.0.2.6/32"];
    let refused = read(&mut model, &mut next_id, &id, &moved, &session).expect_err("refused");
    assert!(
        refused
            .to_string()
            .contains("cut off 192.0.2.2 (session to port 22)"),
        "{refused}"
    );
    assert_eq!(cidrs(&model, &id), nets(&SET));
    // An address that does not pass now is not the feed's to keep.
    let stranger = [GuardedAddress {
        address: addr("198.51.100.9"),
        found: "api_peer".into(),
    }];
    read(&mut model, &mut next_id, &id, &moved, &stranger).expect("applied");
}

#[test]
fn a_source_shows_without_its_credentials_and_keeps_them_when_written_back() {
    let mut model = Model::default();
    let mut next_id = ids();
    let id = fed_list(&mut model, &mut next_id, &SET);
    let source = model
        .allowlist(&id)
        .expect("list")
        .source
        .clone()
        .expect("source");
    assert_eq!(source.shown_url(), "https://***@feeds.example/office.txt");
    let written_back = AllowlistInput {
        source: Some(SourceInput {
            url: source.shown_url(),
            format: crate::policy::FeedFormat::Lines,
            refresh: Some("1m".into()),
        }),
        ..input("office", &SET)
    };
    model
        .replace(&id, written_back, None, t(300), &settings(), &mut next_id)
        .expect("replace");
    let kept = model.allowlist(&id).expect("list").source.clone();
    assert_eq!(kept.map(|source| source.url), Some(source.url));
}
