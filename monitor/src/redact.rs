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

/// `Authorization: Bearer x`, `token x`, `Basic x`.
static AUTH_HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)((?:authorization|proxy-authorization)\s*:\s*(?:bearer|token|basic)?\s*)\S+")
        .expect("valid regex")
});

/// `KEY=value` / `--key=value` where the key names a secret.
static SECRET_ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)((?:^|[\s;&/:-])[A-Za-z0-9_.\-]*(?:token|secret|password|passwd|apikey|api_key|auth|credential|private_key)[A-Za-z0-9_.\-]*\s*=\s*)[^\s]+",
    )
    .expect("valid regex")
});

/// Flags whose next argument is a secret (`--password x`, `-p x` is too ambiguous to include).
const SECRET_FLAGS: &[&str] = &[
    "--password",
    "--token",
    "--secret",
    "--otp",
    "--auth-token",
    "--api-key",
    "-H",
    "--header",
];

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
    let mut out = Cow::Borrowed(text);
    for (re, keep_group) in [
        (&*URL_CREDENTIALS, true),
        (&*AUTH_HEADER, true),
        (&*SECRET_ASSIGNMENT, true),
        (&*TOKEN_SHAPES, false),
    ] {
        if re.is_match(&out) {
            let replaced = if keep_group {
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

/// Redacts each argument, and the argument after a flag that takes a secret.
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut next_is_secret = false;
    for arg in argv {
        if next_is_secret {
            next_is_secret = false;
            // -H takes any header: only its value after "Authorization:" is secret.
            if arg.contains(':') && !arg.to_ascii_lowercase().contains("authorization") {
                out.push(redact(arg).into_owned());
            } else {
                out.push(match arg.split_once(':') {
                    Some((name, _)) => format!("{name}: {REDACTED}"),
                    None => REDACTED.to_string(),
                });
            }
            continue;
        }
        if SECRET_FLAGS.contains(&arg.as_str()) {
            next_is_secret = true;
        }
        out.push(redact(arg).into_owned());
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
