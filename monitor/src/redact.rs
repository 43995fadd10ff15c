//! Keeping secrets out of everything the agent writes.
//!
//! Command lines carry tokens (`curl -H "Authorization: token ghp_..."`, `npm config set
//! //registry/:_authToken=...`, `https://user:pass@host`). Every argv and URL the agent writes goes
//! through here first. Matching is deliberately broad: a redacted harmless string costs little, a
//! leaked token in a report costs a lot.

use std::{borrow::Cow, sync::LazyLock};

use regex::Regex;

pub const REDACTED: &str = "[REDACTED]";

/// Token shapes with a recognisable prefix (GitHub, npm, PyPI, AWS, GitLab, Slack, JWTs).
static TOKEN_SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(gh[pousr]_[A-Za-z0-9]{30,}",
        r"|github_pat_[A-Za-z0-9_]{20,}",
        r"|npm_[A-Za-z0-9]{30,}",
        r"|pypi-[A-Za-z0-9_\-]{40,}",
        r"|(?:AKIA|ASIA)[A-Z0-9]{16}",
        r"|glpat-[A-Za-z0-9_\-]{20,}",
        r"|xox[abposr]-[A-Za-z0-9\-]{10,}",
        r"|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})"
    ))
    .expect("valid regex")
});

/// `scheme://user:password@` in URLs.
static URL_CREDENTIALS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@").expect("valid regex")
});

/// Secret HTTP headers: `Authorization: Bearer x` (`token`, `Basic`), GitLab's
/// `PRIVATE-TOKEN: x`, `X-Api-Key: x`, `X-Auth-Token`, `X-Vault-Token`, `Cookie`, ... The whole
/// value goes.
static AUTH_HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)((?:authorization|proxy-authorization|private-token|job-token|deploy-token|cookie|set-cookie|api-?key|x-[a-z0-9-]*(?:token|key|secret|auth|password)[a-z0-9-]*)\s*:\s*)\S.*",
    )
    .expect("valid regex")
});

/// `scheme://TOKEN@host`: a long user part with no password is a token (`https://git@...` is
/// not).
static URL_TOKEN_USER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([A-Za-z][A-Za-z0-9+.\-]*://)[A-Za-z0-9_\-.~%]{16,}@").expect("valid regex")
});

/// Base64 long enough to hide a token (`Basic` credentials, `echo ... | base64 -d`).
static BASE64_BLOB: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/_\-]{24,}={0,2}").expect("valid regex"));

/// A key naming a secret, given on its own (`aws configure set aws_secret_access_key VALUE`,
/// `npm config set //registry/:_authToken VALUE`, `gh secret set NAME`): the next argument is
/// its value.
static SECRET_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^[A-Za-z0-9_.:/@\-]*(?:token|secret|password|passwd|apikey|api_key|api-key|credential|private_key|access_key|_auth)[A-Za-z0-9_.\-]*$",
    )
    .expect("valid regex")
});

/// `KEY=value` / `--key=value` where the key names a secret.
static SECRET_ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)((?:^|[\s;&/:-])[A-Za-z0-9_.\-]*(?:token|secret|password|passwd|apikey|api_key|auth|credential|private_key)[A-Za-z0-9_.\-]*\s*=\s*)[^\s]+",
    )
    .expect("valid regex")
});

/// `SECRET_ASSIGNMENT` inside a path: the value ends at the next `/`, so the rest of the path
/// stays (`/token=x/.bashrc` keeps `.bashrc`: a bind mount's destination and a write through it
/// redact alike, and the write is still judged as the file it is).
static SECRET_ASSIGNMENT_IN_PATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)((?:^|[\s;&/:-])[A-Za-z0-9_.\-]*(?:token|secret|password|passwd|apikey|api_key|auth|credential|private_key)[A-Za-z0-9_.\-]*\s*=\s*)[^\s/]+",
    )
    .expect("valid regex")
});

/// Flags whose next argument is a secret, for any program. (`-H`/`--header` take a header,
/// judged by its name: `redact_argv`.)
const SECRET_FLAGS: &[&str] = &[
    "--password",
    "--passwd",
    "--token",
    "--access-token",
    "--secret",
    "--client-secret",
    "--otp",
    "--auth",
    "--auth-token",
    "--api-key",
    "--apikey",
    "--private-key",
    "--registry-password",
    "--body",
];

/// `-p` and `-u` mean password and user:password only for some programs (registry clients,
/// uploaders, HTTP clients); elsewhere they are ports and users.
const PASSWORD_FLAG_PROGRAMS: &[&str] = &[
    "docker",
    "podman",
    "buildah",
    "skopeo",
    "nerdctl",
    "oras",
    "helm",
    "twine",
    "crane",
    "mysql",
    "psql",
    "mongo",
    "mongosh",
    "redis-cli",
    "sshpass",
];
const USER_PASSWORD_FLAG_PROGRAMS: &[&str] = &["curl", "wget", "twine", "http", "xh"];

/// Cuts `text` to at most `max` bytes on a character boundary and appends `marker` when it cut.
pub fn truncate_marked(text: &mut String, max: usize, marker: &str) {
    if text.len() <= max {
        return;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(marker);
}

pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = replace_all(
        text,
        &[
            (&URL_CREDENTIALS, true),
            (&URL_TOKEN_USER, true),
            (&AUTH_HEADER, true),
            (&SECRET_ASSIGNMENT, true),
            (&TOKEN_SHAPES, false),
        ],
    );
    // Known token shapes hidden in base64.
    if BASE64_BLOB.is_match(&out) {
        let replaced = BASE64_BLOB.replace_all(&out, |c: &regex::Captures| {
            if hides_token(&c[0]) {
                REDACTED.to_string()
            } else {
                c[0].to_string()
            }
        });
        if let Cow::Owned(replaced) = replaced {
            out = Cow::Owned(replaced);
        }
    }
    out
}

/// Whether base64 text decodes (standard or URL alphabet) to something with a token shape or
/// `user:password` credentials.
fn hides_token(blob: &str) -> bool {
    use base64::Engine as _;
    let trimmed = blob.trim_end_matches('=');
    [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ]
    .iter()
    .filter_map(|engine| engine.decode(trimmed).ok())
    .any(|bytes| {
        let text = String::from_utf8_lossy(&bytes);
        TOKEN_SHAPES.is_match(&text) || redact_plain(&text) != text
    })
}

/// `redact` without the base64 step (which calls this on decoded text).
fn redact_plain(text: &str) -> Cow<'_, str> {
    replace_all(
        text,
        &[
            (&URL_CREDENTIALS, false),
            (&AUTH_HEADER, false),
            (&SECRET_ASSIGNMENT, false),
            (&TOKEN_SHAPES, false),
        ],
    )
}

/// A path the agent writes (executable, working directory, opened file): token shapes and
/// credentials in it go, its shape stays. (No base64 step: `/` is in its alphabet, and every
/// long path would be decoded on the hot path.)
pub fn redact_path(path: &str) -> Cow<'_, str> {
    if !path
        .bytes()
        .any(|b| b == b'_' || b == b'-' || b == b'@' || b == b'=' || b == b':')
        && !["AKIA", "ASIA", "eyJ"].iter().any(|p| path.contains(p))
    {
        // Every token shape and credential form has one of these.
        return Cow::Borrowed(path);
    }
    replace_all(
        path,
        &[
            (&URL_CREDENTIALS, true),
            (&URL_TOKEN_USER, true),
            (&SECRET_ASSIGNMENT_IN_PATH, true),
            (&TOKEN_SHAPES, false),
        ],
    )
}

/// Applies each pattern in turn: the match goes, or with `keep_group` all but its first group
/// (the key or scheme that says what the secret was).
fn replace_all<'a>(text: &'a str, patterns: &[(&LazyLock<Regex>, bool)]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for (re, keep_group) in patterns {
        if re.is_match(&out) {
            let replaced = if *keep_group {
                re.replace_all(&out, |c: &regex::Captures| format!("{}{REDACTED}", &c[1]))
                    .into_owned()
            } else {
                re.replace_all(&out, REDACTED).into_owned()
            };
            out = Cow::Owned(replaced);
        }
    }
    out
}

/// Redacts each argument, and the argument after a flag, key or header name that takes a
/// secret.
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let program = argv
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .unwrap_or_default();
    let password_flags = PASSWORD_FLAG_PROGRAMS.contains(&program);
    let user_flags = USER_PASSWORD_FLAG_PROGRAMS.contains(&program);
    enum Next {
        Plain,
        Secret,
        /// `user:password`: the password goes.
        UserPassword,
        /// A header: its value goes when the header is a secret one.
        Header,
    }
    let mut out = Vec::with_capacity(argv.len());
    let mut next = Next::Plain;
    for (i, arg) in argv.iter().enumerate() {
        match std::mem::replace(&mut next, Next::Plain) {
            Next::Secret => {
                out.push(REDACTED.to_string());
                continue;
            }
            Next::UserPassword => {
                out.push(match arg.split_once(':') {
                    Some((user, _)) => format!("{}:{REDACTED}", redact(user)),
                    None => redact(arg).into_owned(),
                });
                continue;
            }
            Next::Header => {
                // Any header whose name is not a known secret one is judged by its value.
                let lower = arg.to_ascii_lowercase();
                out.push(
                    if lower.contains("auth")
                        || lower.contains("token")
                        || lower.contains("key")
                        || lower.contains("cookie")
                        || lower.contains("secret")
                    {
                        match arg.split_once(':') {
                            Some((name, _)) => format!("{name}: {REDACTED}"),
                            None => REDACTED.to_string(),
                        }
                    } else {
                        redact(arg).into_owned()
                    },
                );
                continue;
            }
            Next::Plain => {}
        }
        let flag = arg.as_str();
        if flag == "-H" || flag == "--header" {
            next = Next::Header;
        } else if SECRET_FLAGS.contains(&flag)
            || (password_flags && (flag == "-p" || flag == "--password"))
        {
            next = Next::Secret;
        } else if user_flags && matches!(flag, "-u" | "--user" | "--proxy-user" | "-U") {
            next = Next::UserPassword;
        } else if i > 0
            && !flag.starts_with('-')
            && !flag.contains('=')
            && SECRET_KEY.is_match(flag)
            // A path names a file, not a key (`cp ~/.aws/credentials DEST` keeps DEST), unless
            // it is npm's `//registry/:_authToken`; so does a file name (`token.txt`).
            && (flag.contains(':') || !flag.contains('/'))
            && !std::path::Path::new(flag)
                .extension()
                .is_some_and(|e| e.len() <= 4 && !flag.contains(':'))
        {
            // `set KEY VALUE`: the value goes (a file named like a secret, `token.txt`, keeps
            // its next argument).
            next = Next::Secret;
        } else if flag.eq_ignore_ascii_case("bearer")
            || flag.eq_ignore_ascii_case("token")
            || flag.eq_ignore_ascii_case("basic")
            || (flag.ends_with(':') && AUTH_HEADER.is_match(&format!("{flag} x")))
        {
            // A header or scheme split over two arguments: `Authorization:` `Bearer` `x`.
            next = Next::Secret;
        }
        out.push(redact(arg).into_owned());
    }
    // A token split over two arguments (`printf %s%s ghp_abc... def...`, a value cut by a
    // wrapper): each half too short for its shape, the two together a token. Both go.
    for i in 1..out.len() {
        let (a, b) = (&argv[i - 1], &argv[i]);
        if out[i - 1] == *a && out[i] == *b {
            let joined = format!("{a}{b}");
            if TOKEN_SHAPES
                .find_iter(&joined)
                .any(|m| m.start() < a.len() && m.end() > a.len())
            {
                out[i - 1] = REDACTED.to_string();
                out[i] = REDACTED.to_string();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Canary tokens in the real shapes; none of them is valid anywhere.
    fn canaries() -> Vec<String> {
        vec![
            format!("ghp_{}", "A1b2C3d4".repeat(5)),
            format!("github_pat_{}", "11ABCDEFG0_x".repeat(4)),
            format!("npm_{}", "Zz9Yy8Xx7".repeat(4)),
            format!("pypi-AgEIcHlwaS5vcmc{}", "Q1w2E3r4".repeat(8)),
            "AKIAIOSFODNN7CANARY1".to_string(),
        ]
    }

    #[test]
    fn token_shapes_are_removed_wherever_they_appear() {
        for token in canaries() {
            for text in [
                token.clone(),
                format!("prefix {token} suffix"),
                format!("https://x-access-token:{token}@github.com/o/r.git"),
                format!("//registry.npmjs.org/:_authToken={token}"),
                format!("Authorization: Bearer {token}"),
            ] {
                let red = redact(&text);
                assert!(
                    !red.contains(&token),
                    "{token} leaked from {text:?} as {red:?}"
                );
                assert!(red.contains(REDACTED));
            }
        }
    }

    #[test]
    fn secret_flags_and_assignments_are_redacted_in_argv() {
        let argv: Vec<String> = [
            "twine",
            "upload",
            "--password",
            "hunter2xyz",
            "NPM_TOKEN=abc123def",
            "-H",
            "Authorization: token s3cr3t",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let red = redact_argv(&argv);
        let joined = red.join(" ");
        for secret in ["hunter2xyz", "abc123def", "s3cr3t"] {
            assert!(!joined.contains(secret), "{secret} leaked: {joined}");
        }
        assert_eq!(red[0], "twine");
        assert_eq!(red[2], "--password");
        assert_eq!(red[4], "NPM_TOKEN=[REDACTED]");
    }

    #[test]
    fn secrets_are_redacted_by_meaning_not_only_by_shape() {
        let secret = "Plain5ecretValue42";
        let token = format!("ghp_{}", "A1b2C3d4".repeat(5));
        let b64 = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(format!("user:{token}"))
        };
        let cases: Vec<Vec<String>> = vec![
            vec![
                "aws".into(),
                "configure".into(),
                "set".into(),
                "aws_secret_access_key".into(),
                secret.into(),
            ],
            vec![
                "npm".into(),
                "config".into(),
                "set".into(),
                "//registry.npmjs.org/:_authToken".into(),
                secret.into(),
            ],
            vec![
                "docker".into(),
                "login".into(),
                "-u".into(),
                "bot".into(),
                "-p".into(),
                secret.into(),
            ],
            vec![
                "twine".into(),
                "upload".into(),
                "-p".into(),
                secret.into(),
                "dist/x.whl".into(),
            ],
            vec![
                "curl".into(),
                "-u".into(),
                format!("bot:{secret}"),
                "https://example.test".into(),
            ],
            vec!["glab".into(), "--access-token".into(), secret.into()],
            vec![
                "curl".into(),
                "-H".into(),
                format!("PRIVATE-TOKEN: {secret}"),
                "https://gitlab.test".into(),
            ],
            vec!["curl".into(), "-H".into(), format!("X-Api-Key: {secret}")],
            vec!["curl".into(), format!("--header=X-Auth-Token: {secret}")],
            vec![
                "git".into(),
                "clone".into(),
                format!("https://{secret}@github.com/o/r"),
            ],
            vec![
                "curl".into(),
                "-H".into(),
                "Authorization:".into(),
                "Bearer".into(),
                secret.into(),
            ],
            vec!["sh".into(), "-c".into(), format!("echo {b64} | base64 -d")],
            vec![
                "curl".into(),
                "-H".into(),
                format!("Authorization: Basic {b64}"),
            ],
        ];
        for argv in cases {
            let red = redact_argv(&argv).join(" ");
            assert!(
                !red.contains(secret) && !red.contains(&token) && !red.contains(&b64),
                "{argv:?} -> {red}"
            );
            assert!(red.contains(REDACTED), "{red}");
        }
        // Paths: a token in a directory name goes, the rest of the path stays.
        let path = format!("/home/runner/work/{token}/file");
        assert_eq!(redact_path(&path), "/home/runner/work/[REDACTED]/file");
        // Forensics keep what is not secret.
        let copy: Vec<String> = ["cp", "/home/u/.aws/credentials", "/tmp/loot"]
            .map(String::from)
            .to_vec();
        assert_eq!(redact_argv(&copy), copy);
        let file: Vec<String> = ["cat", "token.txt", "notes.md"].map(String::from).to_vec();
        assert_eq!(redact_argv(&file), file);
    }

    #[test]
    fn a_secret_in_a_path_segment_leaves_the_rest_of_the_path() {
        assert_eq!(
            redact_path("/token=s3cr3t/.bashrc"),
            format!("/token={REDACTED}/.bashrc")
        );
        assert_eq!(
            redact_path("/w/app/api_key=abc"),
            format!("/w/app/api_key={REDACTED}")
        );
    }

    #[test]
    fn a_token_split_over_two_arguments_is_redacted() {
        let token = "ghp_SPLITCANARY0000000000000000000000000";
        let (a, b) = token.split_at(12);
        let argv: Vec<String> = ["printf", "%s%s", a, b].map(String::from).to_vec();
        let out = redact_argv(&argv);
        assert_eq!(out, ["printf", "%s%s", REDACTED, REDACTED]);
        // Two ordinary neighbours are not a token.
        let argv: Vec<String> = ["git", "commit", "-m", "fix"].map(String::from).to_vec();
        assert_eq!(redact_argv(&argv), argv);
    }

    #[test]
    fn ordinary_arguments_are_untouched() {
        for text in [
            "npm install --ignore-scripts",
            "/usr/bin/node",
            "https://registry.npmjs.org/react",
            "-H",
            "Accept: text/html",
            "a=b",
        ] {
            assert_eq!(redact(text), text);
        }
    }
}
