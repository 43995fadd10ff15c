//! The detections' knowledge, as pure functions: what a credential file is and who owns it, what
//! install-time code looks like for each package manager, where attackers persist, which
//! addresses are cloud metadata endpoints. The engine (`crate::engine`) applies them to events.

pub mod background;
pub mod containers;
pub mod credentials;
pub mod defences;
pub mod dns;
pub mod egress;
pub mod executables;
pub mod exfil_services;
pub mod lifecycle;
pub mod packaging;
pub mod persistence;
pub mod runner_dirs;
pub mod sources;

/// The tool a process is, for ownership checks: the executable's name, or for an interpreter the
/// program it runs (`node .../npm-cli.js` is `npm`, `python3 -m pip` is `pip`).
pub fn tool_of(exe: Option<&str>, argv: &[String]) -> String {
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let program = exe
        .map(base)
        .or_else(|| argv.first().map(|a| base(a)))
        .unwrap_or_default();
    let interpreter = ["python", "node", "nodejs", "ruby", "perl"]
        .into_iter()
        .find(|i| {
            program == *i
                || program
                    .strip_prefix(i)
                    .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        });
    let Some(interpreter) = interpreter else {
        return program;
    };
    let mut args = argv.iter().skip(1).filter(|a| !a.is_empty());
    match args.next().map(String::as_str) {
        Some("-m") => args
            .next()
            .map(|m| match m.as_str() {
                "awscli" => "aws".to_string(),
                m => m.split('.').next().unwrap_or(m).to_string(),
            })
            .unwrap_or_else(|| interpreter.to_string()),
        Some(script) if !script.starts_with('-') => {
            let name = base(script);
            let name = name
                .trim_end_matches(".js")
                .trim_end_matches(".cjs")
                .trim_end_matches(".mjs")
                .trim_end_matches(".py");
            match name {
                // Installed launchers run as `node /usr/bin/npm` (shebang), packaged ones as
                // `node .../npm-cli.js`. A name is no proof (a hook could run its own `npm`),
                // which is why install-time code is judged whatever tool it claims to be.
                "npm-cli" | "npm" => "npm".into(),
                "npx-cli" | "npx" => "npx".into(),
                "yarn" | "yarn-berry" | "yarnpkg" => "yarn".into(),
                "pnpm" | "pnpx" => "pnpm".into(),
                "corepack" => "corepack".into(),
                "pip" | "pip3" => "pip".into(),
                "pipx" | "poetry" | "twine" | "uv" | "pdm" | "hatch" => name.into(),
                "gcloud" => "gcloud".into(),
                "aws" => "aws".into(),
                "az" => "az".into(),
                _ => interpreter.to_string(),
            }
        }
        _ => interpreter.to_string(),
    }
}

/// The rest of `path` below directory `dir` (starting with `/`), when `path` lies inside it:
/// `/w/app/x` is inside `/w/app`, `/w/app2/x` is not.
pub fn path_within<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    path.strip_prefix(dir).filter(|rest| rest.starts_with('/'))
}

/// Whether a tool name matches an owner entry (`git*` covers `git-remote-https`).
pub fn tool_matches(owner: &str, tool: &str) -> bool {
    crate::profile::wildcard_match(owner, tool)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn interpreters_are_named_by_the_program_they_run() {
        let node = Some("/usr/bin/node");
        assert_eq!(
            tool_of(
                node,
                &v(&[
                    "node",
                    "/usr/lib/node_modules/npm/bin/npm-cli.js",
                    "install"
                ])
            ),
            "npm"
        );
        assert_eq!(tool_of(node, &v(&["node", "postinstall.js"])), "node");
        assert_eq!(tool_of(node, &v(&["node", "/usr/bin/npm", "ci"])), "npm");
        assert_eq!(
            tool_of(
                Some("/usr/bin/python3"),
                &v(&["python3", "/usr/bin/pip3", "install"])
            ),
            "pip"
        );
        assert_eq!(
            tool_of(
                Some("/usr/bin/python3.11"),
                &v(&["python3", "-m", "pip", "install", "x"])
            ),
            "pip"
        );
        assert_eq!(
            tool_of(Some("/usr/bin/python3.11"), &v(&["python3", "-c", "pass"])),
            "python"
        );
        assert_eq!(tool_of(Some("/usr/bin/git"), &v(&["git", "fetch"])), "git");
        assert_eq!(
            tool_of(None, &v(&["/usr/lib/git-core/git-remote-https"])),
            "git-remote-https"
        );
        assert!(tool_matches("git*", "git-remote-https"));
    }

    #[test]
    fn a_path_is_within_a_directory_only_below_a_separator() {
        assert_eq!(path_within("/w/app/x", "/w/app"), Some("/x"));
        assert_eq!(path_within("/w/app2/x", "/w/app"), None);
        assert_eq!(path_within("/w/app", "/w/app"), None);
    }
}
