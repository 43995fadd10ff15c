//! Packaging leaks: a packing command reading, to put into the artifact it builds, files that
//! should never ship: source maps (the 2026 npm release that shipped a 60 MB `cli.js.map` with
//! the full sources), `.env` files and keys. There is no network sign; the sign is which files
//! the packing process itself opened.

use super::credentials;

/// The packing command a process runs (`npm pack`, `cargo publish`), if any. `tool` is
/// `super::tool_of`'s name for it.
pub fn packing_command(tool: &str, argv: &[String]) -> Option<String> {
    let verbs: &[&str] = match tool {
        "npm" | "pnpm" | "bun" => &["pack", "publish"],
        // yarn 1: `yarn pack`/`yarn publish`; yarn berry: `yarn pack`, `yarn npm publish`.
        "yarn" => &["pack", "publish"],
        "cargo" => &["package", "publish"],
        "gem" => &["build"],
        _ => return None,
    };
    // The subcommand is the first word after the program that is not an option (`npm --silent
    // pack`); `yarn npm publish` has one word more.
    let mut words = argv
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        // `node /usr/bin/npm pack`: skip the script that `tool_of` read the name from.
        .skip_while(|a| a.contains('/'));
    let mut verb = words.next()?.as_str();
    if tool == "yarn" && verb == "npm" {
        verb = words.next()?.as_str();
    }
    verbs
        .contains(&verb)
        .then(|| format!("{tool} {verb}"))
}

/// What kind of leak a file read by packing tool `tool` would be, if any. The tool's own
/// credentials are its configuration, not packed (npm reads the project's `.npmrc` and never
/// ships it).
pub fn leak_kind(path: &str, tool: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.ends_with(".map") {
        return Some("source map");
    }
    credentials::classify(path)
        .filter(|k| !k.owned_by(tool))
        .map(|k| k.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn packing_commands_are_recognised_by_their_subcommand() {
        assert_eq!(
            packing_command("npm", &v(&["node", "/usr/bin/npm", "pack"])).as_deref(),
            Some("npm pack")
        );
        assert_eq!(
            packing_command("npm", &v(&["npm", "--silent", "publish", "--provenance"])).as_deref(),
            Some("npm publish")
        );
        assert_eq!(
            packing_command("yarn", &v(&["node", "/x/yarn.js", "npm", "publish"])).as_deref(),
            Some("yarn publish")
        );
        assert_eq!(
            packing_command("cargo", &v(&["cargo", "package", "--allow-dirty"])).as_deref(),
            Some("cargo package")
        );
        assert_eq!(packing_command("npm", &v(&["node", "/usr/bin/npm", "install"])), None);
        // A file named like a verb is not the subcommand.
        assert_eq!(packing_command("npm", &v(&["npm", "run", "pack"])), None);
        assert_eq!(packing_command("node", &v(&["node", "pack"])), None);
    }

    #[test]
    fn leaks_are_source_maps_and_credentials() {
        assert_eq!(leak_kind("/w/app/dist/cli.js.map", "npm"), Some("source map"));
        assert_eq!(leak_kind("/w/app/.env", "npm"), Some("dotenv"));
        assert_eq!(leak_kind("/w/app/.npmrc", "npm"), None, "npm's own configuration");
        assert_eq!(leak_kind("/w/app/.npmrc", "cargo"), Some("npm-token"));
        assert_eq!(leak_kind("/w/app/dist/cli.js", "npm"), None);
        assert_eq!(leak_kind("/w/app/package.json", "npm"), None);
    }
}
