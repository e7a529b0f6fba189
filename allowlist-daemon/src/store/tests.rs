//! The store's tests: saves that read back, damaged and odd files, entry files written once
//! and collected.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use serde_json::json;
use time::OffsetDateTime;

use super::*;
use crate::model::{EntryId, Settings};

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "allowlist-store-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_missing_state_is_none_and_a_saved_one_reads_back_with_a_previous_version() {
    let dir = scratch();
    let mut store = Store::open(&dir).expect("open");
    assert!(store.load().expect("load").is_none());
    let model = Model::default();
    store.save(&model).expect("save");
    store.save(&model).expect("save again");
    assert_eq!(store.load().expect("load"), Some(model));
    assert!(dir.join(PREVIOUS_FILE).exists());
    assert!(!dir.join("state.json.tmp").exists());
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_corrupt_state_names_the_file_and_the_backup() {
    let dir = scratch();
    let mut store = Store::open(&dir).expect("open");
    for content in [&b""[..], b"{\"allowlists\": ", b"not json"] {
        fs::write(store.path(), content).expect("write");
        let err = store.load().expect_err("corrupt").to_string();
        assert!(err.contains("state.json is corrupt"), "{err}");
        assert!(err.contains("state.json.prev"), "{err}");
    }
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_symlinked_or_odd_state_file_is_refused() {
    let dir = scratch();
    let mut store = Store::open(&dir).expect("open");
    let elsewhere = dir.join("elsewhere.json");
    fs::write(
        &elsewhere,
        serde_json::to_vec(&Model::default()).expect("json"),
    )
    .expect("write");
    std::os::unix::fs::symlink(&elsewhere, store.path()).expect("symlink");
    let err = store.load().expect_err("symlink").to_string();
    assert!(
        err.contains("state.json is not a regular file (a symbolic link)"),
        "{err}"
    );
    fs::remove_file(store.path()).expect("remove link");
    fs::create_dir(store.path()).expect("dir");
    let err = store.load().expect_err("directory").to_string();
    assert!(err.contains("not a regular file"), "{err}");
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_failed_save_leaves_no_temporary_file() {
    let dir = scratch();
    let mut store = Store::open(&dir).expect("open");
    // The rename fails: a directory sits where the state file goes.
    fs::create_dir(store.path()).expect("dir");
    fs::write(store.path().join("x"), b"x").expect("fill");
    store
        .save(&Model::default())
        .expect_err("rename over a directory");
    assert!(!dir.join("state.json.tmp").exists());
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_state_file_gone_beside_its_previous_version_is_refused() {
    let dir = scratch();
    let mut store = Store::open(&dir).expect("open");
    store.save(&Model::default()).expect("save");
    store.save(&Model::default()).expect("save again");
    fs::remove_file(store.path()).expect("remove");
    let err = store.load().expect_err("missing").to_string();
    assert!(err.contains("state.json is missing"), "{err}");
    assert!(err.contains("state.json.prev exists"), "{err}");
    fs::remove_dir_all(&dir).expect("cleanup");
}

/// A model of a large list `al1` (`size` hosts from `first`) and a small enabled one `al2`.
fn model_with_large_list(first: u32, size: u32) -> Model {
    let entries: Vec<_> = (0..size)
        .map(|n| {
            json!({
                "id": format!("en_{:016x}", first + n + 1),
                "cidr": format!("{}/32", std::net::Ipv4Addr::from(0x0a00_0000 + first + n)),
                "rule": n,
            })
        })
        .collect();
    let list = |id: &str, entries: serde_json::Value| {
        json!({
            "id": id, "name": id, "description": "", "entries": entries,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "version": 1,
        })
    };
    let small = json!([
        {"id": "en_00000000ffff0001", "cidr": "192.0.2.1/32", "rule": 60000},
        {"id": "en_00000000ffff0002", "cidr": "192.0.2.2/32", "rule": 60001},
    ]);
    serde_json::from_value(json!({
        "format": 3,
        "allowlists": {"al1": list("al1", json!(entries)), "al2": list("al2", small)},
        "enabled": ["al2"],
        "pending": null,
    }))
    .expect("model")
}

fn entry_files(dir: &std::path::Path) -> BTreeSet<String> {
    fs::read_dir(dir.join("lists"))
        .map(|files| {
            files
                .flatten()
                .map(|file| file.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_large_list_is_written_once_and_old_files_are_collected() {
    let dir = scratch();
    let mut store = Store::open(&dir).expect("open");
    let model = model_with_large_list(0, 3000);
    store.save(&model).expect("save");
    let files = entry_files(&dir);
    assert_eq!(files.len(), 1, "the large list only: {files:?}");
    let state = fs::read_to_string(store.path()).expect("state");
    assert!(state.contains("entries_file") && state.contains("192.0.2.1/32"));
    assert!(
        state.len() < 2000,
        "the state holds no large list: {}",
        state.len()
    );

    // An edit of the small list leaves the large list's file as it is.
    let file = dir.join("lists").join(files.first().expect("file"));
    let written = fs::metadata(&file)
        .expect("file")
        .modified()
        .expect("mtime");
    let mut edited = model.clone();
    let settings = Settings {
        max_lists: 10,
        max_entries: 10_000,
        max_name_len: 16,
        max_description_len: 16,
        ack_min: std::time::Duration::from_secs(1),
        ack_max: std::time::Duration::from_secs(2),
        rule_capacity: 65536,
        max_entry_ttl: std::time::Duration::from_secs(7 * 24 * 3600),
    };
    edited
        .remove_entry(
            "al2",
            EntryId(0xffff_0002),
            None,
            OffsetDateTime::now_utc(),
            &settings,
        )
        .expect("edit");
    store.save(&edited).expect("save the edit");
    assert_eq!(entry_files(&dir), files);
    assert_eq!(
        fs::metadata(&file)
            .expect("file")
            .modified()
            .expect("mtime"),
        written
    );

    // Read back whole, by a new store as at a restart; a file no state names (left by a save
    // cut short) is removed.
    let stray = dir.join("lists").join("al1.0.1.json");
    fs::write(&stray, b"[]").expect("stray file");
    let mut restarted = Store::open(&dir).expect("open");
    assert_eq!(restarted.load().expect("load"), Some(edited.clone()));
    assert!(!stray.exists(), "the stray file is removed");
    assert_eq!(entry_files(&dir), files);

    // Replaced twice: the files of the state and of its previous version stay, no other.
    let replaced = model_with_large_list(5000, 2000);
    restarted.save(&replaced).expect("replace");
    let twice = model_with_large_list(9000, 1500);
    restarted.save(&twice).expect("replace again");
    let left = entry_files(&dir);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(files.first().expect("file")));
    assert_eq!(restarted.load().expect("load"), Some(twice));
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_missing_or_damaged_entry_file_is_refused_by_name() {
    let dir = scratch();
    let mut store = Store::open(&dir).expect("open");
    store.save(&model_with_large_list(0, 2000)).expect("save");
    let file = dir
        .join("lists")
        .join(entry_files(&dir).first().expect("file"));
    fs::write(&file, b"[{\"id\": ").expect("damage");
    let err = Store::open(&dir)
        .expect("open")
        .load()
        .expect_err("damaged");
    let message = err.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("state.json.prev"), "{message}");
    fs::remove_file(&file).expect("remove");
    let err = Store::open(&dir)
        .expect("open")
        .load()
        .expect_err("missing");
    assert!(err.to_string().contains("the file is missing"), "{err}");
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_failed_save_leaves_no_entry_file() {
    let dir = scratch();
    let mut store = Store::open(&dir).expect("open");
    fs::create_dir(store.path()).expect("dir");
    fs::write(store.path().join("x"), b"x").expect("fill");
    store
        .save(&model_with_large_list(0, 2000))
        .expect_err("rename over a directory");
    assert!(entry_files(&dir).is_empty());
    assert!(!dir.join("state.json.tmp").exists());
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_state_directory_others_may_change_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = scratch();
    fs::create_dir_all(&dir).expect("dir");
    for mode in [0o777, 0o775, 0o757] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).expect("chmod");
        let err = Store::open(&dir).expect_err("refused");
        assert!(
            matches!(err, StoreError::ExposedDir { .. }),
            "{mode:o}: {err}"
        );
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    Store::open(&dir).expect("readable by others, writable by the daemon alone");
    std::os::unix::fs::chown(&dir, Some(65534), None).expect("chown");
    let err = Store::open(&dir).expect_err("refused");
    assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn the_writable_probe_never_writes_through_a_link() {
    let dir = scratch();
    fs::create_dir_all(&dir).expect("dir");
    let outside = dir.with_extension("outside");
    fs::write(&outside, "precious").expect("outside file");
    std::os::unix::fs::symlink(&outside, dir.join(".writable")).expect("symlink");
    Store::open(&dir).expect("open");
    assert_eq!(
        fs::read_to_string(&outside).expect("outside file"),
        "precious",
        "the file the link named is untouched"
    );
    assert!(!dir.join(".writable").exists(), "the probe is gone");
    fs::remove_file(&outside).expect("cleanup");
    fs::remove_dir_all(&dir).expect("cleanup");
}
