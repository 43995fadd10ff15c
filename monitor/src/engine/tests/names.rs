//! Names given without opening the file (rename, link, symlink) are judged as writes of the new
//! name; a credential's old name as `credential-relinked`; a name whose directory the kernel
//! could not resolve fails closed.

use monitor_common::{MATCH_FROM, MATCH_NAME, MATCH_PARENT_DIR, NAME_OP_LINK, NAME_OP_RENAME};

use super::*;

#[test]
fn a_rename_onto_a_start_up_file_is_a_persistence_write() {
    let mut sim = Sim::new(Profile::default());
    sim.runner().run_step(300, "__run");
    sim.spawn(
        300,
        310,
        "/usr/bin/mv",
        &["mv", "rc.new", ".bashrc"],
        HOME,
        github_env("__run"),
    );
    sim.name(310, NAME_OP_RENAME, HOME, ".bashrc", "rc.new", MATCH_NAME);
    let f = sim.only("persistence-write");
    assert_eq!(f.evidence["path"], format!("{HOME}/.bashrc"));
    assert_eq!(f.evidence["via"], "rename");
    assert!(f.summary.contains("renamed a file onto"), "{}", f.summary);
}

#[test]
fn a_credential_linked_elsewhere_is_relinked_unless_its_owner_rotates_it() {
    let mut sim = Sim::new(Profile::default());
    sim.runner().run_step(300, "__run");
    let e = github_env("__run");
    sim.spawn(
        300,
        310,
        "/usr/bin/ln",
        &["ln", ".npmrc", "notes.txt"],
        HOME,
        e.clone(),
    );
    sim.name(310, NAME_OP_LINK, HOME, "notes.txt", ".npmrc", MATCH_FROM);
    let f = sim.only("credential-relinked");
    assert_eq!(f.evidence["path"], format!("{HOME}/.npmrc"));
    assert_eq!(f.evidence["new_name"], format!("{HOME}/notes.txt"));
    // The gh CLI replacing its own hosts.yml by rename is its own business.
    let mut sim = Sim::new(Profile::default());
    sim.runner().run_step(300, "__run");
    sim.spawn(300, 320, "/usr/bin/gh", &["gh", "auth", "login"], HOME, e);
    sim.name(
        320,
        NAME_OP_RENAME,
        &format!("{HOME}/.config/gh"),
        "hosts.yml.tmp",
        "hosts.yml",
        MATCH_FROM,
    );
    assert!(sim.findings.is_empty(), "{:?}", sim.rules());
}

#[test]
fn a_watched_name_in_an_unresolved_directory_fails_closed() {
    let mut sim = Sim::new(Profile::default());
    sim.runner().run_step(300, "__run");
    sim.spawn(
        300,
        310,
        "/usr/bin/mv",
        &["mv", "x", "ci.yml"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.name(310, NAME_OP_RENAME, "", "ci.yml", "x", MATCH_PARENT_DIR);
    let f = sim.only("unresolved-sensitive-open");
    assert_eq!(f.evidence["name"], "ci.yml");
}
