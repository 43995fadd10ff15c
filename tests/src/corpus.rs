//! A corpus of real, benign CI build jobs (`tests/corpus/<name>/`): small projects with real
//! dependency trees and lockfiles, each with a GitHub workflow (`.github/workflows/ci.yml`) whose
//! `run:` steps are the job.
//!
//! [`CorpusJob::prepare`] copies a project into a runner's workspace (standing in for
//! `actions/checkout`) and turns its workflow's steps into `(step id, bash script)` pairs for
//! [`crate::FakeRunner::run_job`]. The scripts need nothing from the runner's environment but
//! `PATH` and `HOME`: every absolute path is baked in.
//!
//! Workflow files use a small subset of GitHub's syntax:
//! - `env:` at the top, job or step level: exported at the top of each step's script, as
//!   `export NAME="value"` (so `$PATH` in a value is expanded by bash, unlike on GitHub);
//! - steps: `run:` with optional `id:`, `name:`, `env:` and `working-directory:`; a step without
//!   an id gets GitHub's `__run`, `__run_2`, ...; `uses: actions/checkout@...` is the copy
//!   `prepare` makes, and any other `uses:` is refused;
//! - expressions: `${{ github.workspace }}` (the workspace given to `prepare`) and
//!   `${{ corpus.cache }}` ([`cache_dir`]); any other `${{ ... }}` is refused.
//!
//! Each script starts with `set -o pipefail` (GitHub's `bash -e -o pipefail`; the runner adds
//! `-e`) and a `cd` into the workspace.
//!
//! Dependencies are cached under `<repo>/target/corpus-cache/` (npm's cache, pip's cache, and one
//! `CARGO_HOME` per Rust job), so only the first run on a machine downloads from the registries;
//! jobs running at the same time share it safely (npm's and pip's caches are safe for that, and
//! each Rust job has its own `CARGO_HOME`, guarded by cargo's lock when a job runs twice at once).
//! Build output stays in the workspace (`CARGO_TARGET_DIR` is `<workspace>/target`).
//!
//! The jobs run as root only: they use the toolchains under /root (rustup, pyenv).

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde_norway::Value as Yaml;

/// One job of the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorpusJob {
    /// Its directory under `tests/corpus/`.
    pub name: &'static str,
    /// What it builds, in a line.
    pub description: &'static str,
    /// The package registries it downloads from (`npm`, `pypi`, `crates.io`); empty when it
    /// downloads nothing (its only traffic is on loopback, if any).
    pub ecosystems: &'static [&'static str],
    /// Behaviour a monitor may care about (see [`TRAITS`]).
    pub traits: &'static [&'static str],
    /// The file that pins its dependency tree (relative to its directory); `None` for a job
    /// without dependencies.
    pub lockfile: Option<&'static str>,
}

/// The vocabulary of [`CorpusJob::traits`].
pub const TRAITS: &[(&str, &str)] = &[
    (
        "native-compile",
        "runs gcc/g++/as/ld (make, node-gyp, setuptools, crates' build scripts); gcc keeps its \
         temporary files in /tmp",
    ),
    (
        "install-scripts",
        "a package's own lifecycle script runs during `npm ci`",
    ),
    (
        "build-isolation-in-tmp",
        "pip or `build` make a throwaway build environment under /tmp and run a build backend \
         from it (`python -m build` execs /tmp/build-env-*/bin/python)",
    ),
    (
        "sdist-build",
        "a dependency is built from its source distribution (PEP 517 hooks)",
    ),
    (
        "build-script",
        "cargo runs build scripts and loads proc-macros compiled in the job",
    ),
    (
        "runs-built-binaries",
        "the job executes programs it just compiled, from the workspace",
    ),
    (
        "source-maps",
        "emits .js.map files (ts-library also ships them in its `npm pack` tarball)",
    ),
    (
        "tmp-cache",
        "keeps a cache under /tmp that outlives the job (jest's /tmp/jest_*)",
    ),
    (
        "loopback-http",
        "serves and downloads over HTTP on 127.0.0.1, with a server the step starts and stops",
    ),
    (
        "ssh-agent",
        "generates a key in ~/.ssh and keeps ssh-agent running across steps",
    ),
    (
        "gpg-agent",
        "generates a key in ~/.gnupg; gpg-agent starts on demand and runs across steps",
    ),
    (
        "reads-private-keys",
        "reads its own private keys (~/.ssh, ~/.gnupg), as signing does",
    ),
];

/// Every job of the corpus.
pub fn jobs() -> Vec<CorpusJob> {
    vec![
        CorpusJob {
            name: "ts-library",
            description: "TypeScript library: npm ci, tsc with source maps, jest (ts-jest), eslint, npm pack",
            ecosystems: &["npm"],
            traits: &["source-maps", "tmp-cache"],
            lockfile: Some("package-lock.json"),
        },
        CorpusJob {
            name: "npm-monorepo",
            description: "npm workspaces (packages/b depends on packages/a): npm ci, build and test every workspace",
            ecosystems: &["npm"],
            traits: &["source-maps"],
            lockfile: Some("package-lock.json"),
        },
        CorpusJob {
            name: "node-addon",
            description: "Node-API addon: npm ci runs the package's install script, node-gyp rebuild; node --test loads it",
            ecosystems: &["npm"],
            traits: &["native-compile", "install-scripts"],
            lockfile: Some("package-lock.json"),
        },
        CorpusJob {
            name: "python-package",
            description: "setuptools package: venv, hashed pins with tomli from its sdist, pytest, python -m build, install the wheel",
            ecosystems: &["pypi"],
            traits: &["build-isolation-in-tmp", "sdist-build"],
            lockfile: Some("requirements-dev.txt"),
        },
        CorpusJob {
            name: "python-c-extension",
            description: "setuptools C extension: venv, pip install . (isolated build, gcc), pytest imports it",
            ecosystems: &["pypi"],
            traits: &["native-compile", "build-isolation-in-tmp"],
            lockfile: Some("requirements-test.txt"),
        },
        CorpusJob {
            name: "rust-crate",
            description: "crate with serde (derive), anyhow, libc and ring: cargo build, cargo test, run the binary",
            ecosystems: &["crates.io"],
            traits: &["native-compile", "build-script", "runs-built-binaries"],
            lockfile: Some("Cargo.lock"),
        },
        CorpusJob {
            name: "cargo-workspace",
            description: "cargo workspace: a proc-macro crate (syn/quote), a library using it, a binary with build.rs",
            ecosystems: &["crates.io"],
            traits: &["native-compile", "build-script", "runs-built-binaries"],
            lockfile: Some("Cargo.lock"),
        },
        CorpusJob {
            name: "c-project",
            description: "C with make: build, test, tar czf a release, curl it back from a loopback http.server",
            ecosystems: &[],
            traits: &["native-compile", "runs-built-binaries", "loopback-http"],
            lockfile: None,
        },
        CorpusJob {
            name: "sign-deploy",
            description: "release signing: ssh deploy key in ssh-agent across steps, gpg key, detached signatures, sha256sum, local deploy",
            ecosystems: &[],
            traits: &["ssh-agent", "gpg-agent", "reads-private-keys"],
            lockfile: None,
        },
    ]
}

/// The job called `name`; panics when there is none.
pub fn job(name: &str) -> CorpusJob {
    jobs()
        .into_iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no corpus job {name:?}"))
}

/// The repository's root (the parent of the `tests` crate).
fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
}

/// `tests/corpus`.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// `<repo>/target/corpus-cache`, created if missing: the dependency cache of every job.
pub fn cache_dir() -> PathBuf {
    let dir = repo_root().join("target/corpus-cache");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Directories never copied into a workspace: build output and installed dependencies, should a
/// project have been built in place.
const NOT_COPIED: &[&str] = &[
    "node_modules",
    "target",
    ".venv",
    "dist",
    "build",
    "__pycache__",
    ".pytest_cache",
];

impl CorpusJob {
    /// `tests/corpus/<name>`.
    pub fn source_dir(&self) -> PathBuf {
        corpus_dir().join(self.name)
    }

    /// Its workflow file.
    pub fn workflow_path(&self) -> PathBuf {
        self.source_dir().join(".github/workflows/ci.yml")
    }

    /// Copies `tests/corpus/<name>` into `workspace` (created if missing) and returns the job's
    /// steps, `(step id, bash script)`, with absolute paths baked into the scripts.
    pub fn prepare(&self, workspace: &Path) -> Vec<(String, String)> {
        fs::create_dir_all(workspace)
            .unwrap_or_else(|e| panic!("creating {}: {e}", workspace.display()));
        copy_tree(&self.source_dir(), workspace)
            .unwrap_or_else(|e| panic!("copying corpus job {}: {e}", self.name));
        self.steps(workspace)
    }

    /// The job's steps for a project checked out at `workspace`, without copying anything.
    pub fn steps(&self, workspace: &Path) -> Vec<(String, String)> {
        let path = self.workflow_path();
        let text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let cache = cache_dir();
        steps_of_workflow(&text, workspace, &cache)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

/// `steps` as the `(&str, &str)` pairs that [`crate::FakeRunner::run_job`] takes.
pub fn step_refs(steps: &[(String, String)]) -> Vec<(&str, &str)> {
    steps
        .iter()
        .map(|(id, script)| (id.as_str(), script.as_str()))
        .collect()
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            let n = name.to_string_lossy();
            if NOT_COPIED.contains(&n.as_ref()) || n.ends_with(".egg-info") {
                continue;
            }
            fs::create_dir_all(&dst)?;
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            let _ = fs::remove_file(&dst);
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else {
            fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Replaces the workflow expressions this corpus uses; refuses any other.
fn expand(text: &str, workspace: &Path, cache: &Path) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| format!("unclosed expression in {text:?}"))?;
        let expr = rest[start + 3..start + end].trim();
        match expr {
            "github.workspace" => out.push_str(&workspace.display().to_string()),
            "corpus.cache" => out.push_str(&cache.display().to_string()),
            other => return Err(format!("unsupported expression `${{{{ {other} }}}}`")),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `(NAME, value)` pairs of an `env:` mapping, in order, expressions expanded.
fn env_of(node: &Yaml, workspace: &Path, cache: &Path) -> Result<Vec<(String, String)>, String> {
    let Some(map) = node.get("env") else {
        return Ok(Vec::new());
    };
    let map = map.as_mapping().ok_or("`env:` is not a mapping")?;
    map.iter()
        .map(|(k, v)| {
            let k = k.as_str().ok_or("an `env:` name is not a string")?;
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad variable name {k:?}"));
            }
            let v = scalar(v).ok_or_else(|| format!("`env: {k}` is not a scalar"))?;
            Ok((k.to_string(), expand(&v, workspace, cache)?))
        })
        .collect()
}

/// `s` between double quotes, with `$` left for bash to expand.
fn double_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn steps_of_workflow(
    text: &str,
    workspace: &Path,
    cache: &Path,
) -> Result<Vec<(String, String)>, String> {
    let doc: Yaml = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    let workflow_env = env_of(&doc, workspace, cache)?;
    let jobs = doc
        .get("jobs")
        .and_then(Yaml::as_mapping)
        .ok_or("no `jobs:`")?;
    if jobs.len() != 1 {
        return Err(format!("expected one job, found {}", jobs.len()));
    }
    let (_, job) = jobs.iter().next().expect("one job");
    let job_env = env_of(job, workspace, cache)?;
    let steps = job
        .get("steps")
        .and_then(Yaml::as_sequence)
        .ok_or("the job has no `steps:`")?;
    let mut out: Vec<(String, String)> = Vec::new();
    let mut unnamed = 0;
    for step in steps {
        if let Some(uses) = step.get("uses") {
            let uses = uses.as_str().unwrap_or_default();
            if uses.starts_with("actions/checkout@") {
                continue;
            }
            return Err(format!("unsupported `uses: {uses}`"));
        }
        let run = step
            .get("run")
            .and_then(Yaml::as_str)
            .ok_or("a step without `run:`")?;
        let id = match step.get("id").and_then(Yaml::as_str) {
            Some(id) => id.to_string(),
            None => {
                unnamed += 1;
                if unnamed == 1 {
                    "__run".to_string()
                } else {
                    format!("__run_{unnamed}")
                }
            }
        };
        if out.iter().any(|(seen, _)| *seen == id) {
            return Err(format!("step id {id:?} used twice"));
        }
        let name = step.get("name").and_then(Yaml::as_str).unwrap_or(&id);
        let mut dir = workspace.to_path_buf();
        if let Some(wd) = step.get("working-directory").and_then(Yaml::as_str) {
            dir = dir.join(expand(wd, workspace, cache)?);
        }
        let mut script = format!("# {name}\nset -o pipefail\n");
        for (k, v) in workflow_env
            .iter()
            .chain(&job_env)
            .chain(&env_of(step, workspace, cache)?)
        {
            script.push_str(&format!("export {k}={}\n", double_quote(v)));
        }
        script.push_str(&format!(
            "cd {}\n",
            runner_sim::shell_quote(&dir.display().to_string())
        ));
        script.push_str(&expand(run, workspace, cache)?);
        if !script.ends_with('\n') {
            script.push('\n');
        }
        out.push((id, script));
    }
    if out.is_empty() {
        return Err("no `run:` steps".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_has_its_project_lockfile_and_workflow() {
        let names: Vec<_> = jobs().iter().map(|j| j.name).collect();
        let mut dirs: Vec<String> = fs::read_dir(corpus_dir())
            .expect("tests/corpus")
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        dirs.sort();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(dirs, sorted, "tests/corpus/* and jobs() list the same jobs");
        for job in jobs() {
            assert_eq!(
                job.lockfile.is_some(),
                !job.ecosystems.is_empty(),
                "{}",
                job.name
            );
            if let Some(lockfile) = job.lockfile {
                assert!(
                    job.source_dir().join(lockfile).is_file(),
                    "{}: no {lockfile}",
                    job.name
                );
            }
            for tr in job.traits {
                assert!(
                    TRAITS.iter().any(|(t, _)| t == tr),
                    "{}: unknown trait {tr}",
                    job.name
                );
            }
        }
    }

    #[test]
    fn prepare_copies_and_bakes_absolute_paths() {
        let cache = cache_dir().display().to_string();
        for job in jobs() {
            let ws = tempfile::tempdir().expect("workspace");
            let steps = job.prepare(ws.path());
            assert!(ws.path().join(".github/workflows/ci.yml").is_file());
            assert!(!steps.is_empty(), "{}", job.name);
            let ws_text = ws.path().display().to_string();
            for (id, script) in &steps {
                assert!(
                    id.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                    "{}: step id {id:?}",
                    job.name
                );
                assert!(!script.contains("${{"), "{}/{id}: {script}", job.name);
                assert!(
                    script.contains(&format!("cd '{ws_text}'")),
                    "{}/{id} starts in the workspace:\n{script}",
                    job.name
                );
                // The only address a job names is loopback's.
                for (i, _) in script.match_indices("://") {
                    let after = &script[i + 3..];
                    assert!(
                        after.starts_with("127.0.0.1"),
                        "{}/{id}: a non-loopback URL:\n{script}",
                        job.name
                    );
                }
            }
            if !job.ecosystems.is_empty() {
                assert!(
                    steps.iter().any(|(_, s)| s.contains(&cache)),
                    "{}: its downloads go through the corpus cache",
                    job.name
                );
            }
        }
    }

    #[test]
    fn workflow_subset() {
        let ws = Path::new("/w/s");
        let cache = Path::new("/c");
        let yaml = "env:\n  A: ${{ corpus.cache }}/x\n  P: /bin:$PATH\njobs:\n  j:\n    env:\n      Q: 'a\"b'\n    steps:\n      - uses: actions/checkout@v4\n      - run: echo one\n      - id: two\n        working-directory: sub\n        env: { N: 1 }\n        run: echo ${{ github.workspace }}\n      - run: echo three\n";
        let steps = steps_of_workflow(yaml, ws, cache).unwrap();
        let ids: Vec<_> = steps.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, ["__run", "two", "__run_2"]);
        assert_eq!(
            steps[1].1,
            "# two\nset -o pipefail\nexport A=\"/c/x\"\nexport P=\"/bin:$PATH\"\nexport Q=\"a\\\"b\"\nexport N=\"1\"\ncd '/w/s/sub'\necho /w/s\n"
        );
        assert!(steps_of_workflow(
            "jobs:\n  j:\n    steps:\n      - run: echo ${{ secrets.X }}\n",
            ws,
            cache
        )
        .unwrap_err()
        .contains("unsupported expression"));
        assert!(steps_of_workflow(
            "jobs:\n  j:\n    steps:\n      - uses: evil/action@v1\n",
            ws,
            cache
        )
        .unwrap_err()
        .contains("unsupported `uses"));
    }
}
