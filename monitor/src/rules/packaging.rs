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
    verbs.contains(&verb).then(|| format!("{tool} {verb}"))
}

/// What kind of leak a file read by packing tool `tool` would be, if any. The tool's own
/// credentials are its configuration, not packed (npm reads the project's `.npmrc` and never
/// ships it). A source map is a leak when it embeds the sources (`map_embeds_sources`; unknown
/// content, as in a replayed log or an unreadable file, fails closed): an ordinary `tsc` map
/// holds only line mappings and file names, which the package's own `.js` already reveals.
pub fn leak_kind(path: &str, tool: &str, map: Option<MapFacts>) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.ends_with(".map") {
        return match map {
            Some(MapFacts {
                embeds_sources: true,
                ..
            }) => Some("source map with embedded sources"),
            Some(MapFacts {
                sources_packed: Some(true),
                ..
            }) => Some("source map shipped with its sources"),
            Some(_) => None,
            None => Some("source map (content unknown)"),
        };
    }
    credentials::classify(path)
        .filter(|k| !k.owned_by(tool))
        .map(|k| k.name)
}

/// What the agent found in a source map a process read (`Event`'s `map_*` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapFacts {
    /// Its `sourcesContent` holds text: the sources ship inside the map.
    pub embeds_sources: bool,
    /// The files it maps would be packed with it (npm's `files` rules); `None`: unknown.
    pub sources_packed: Option<bool>,
}

/// Whether npm packs any of `sources` (paths relative to the package root, files that exist):
/// with a `files` list, those it names (a directory names everything under it; globs allowed);
/// without one, everything, unless an `.npmignore` or `.gitignore` decides (then unknown).
pub fn npm_packs_any(
    files: Option<&[String]>,
    ignore_file: bool,
    sources: &[String],
) -> Option<bool> {
    let Some(files) = files else {
        return if ignore_file {
            None
        } else {
            Some(!sources.is_empty())
        };
    };
    let entries: Vec<globset::GlobMatcher> = files
        .iter()
        .filter(|f| !f.starts_with('!'))
        .filter_map(|f| {
            let f = f.trim_start_matches("./").trim_end_matches('/');
            globset::GlobBuilder::new(f)
                .literal_separator(true)
                .build()
                .ok()
                .map(|g| g.compile_matcher())
        })
        .collect();
    Some(sources.iter().any(|source| {
        // The file itself, or a directory above it, is named.
        let mut path = source.as_str();
        loop {
            if entries.iter().any(|e| e.is_match(path)) {
                return true;
            }
            match path.rsplit_once('/') {
                Some((parent, _)) => path = parent,
                None => return false,
            }
        }
    }))
}

/// Source maps past this size are not scanned (the answer is "unknown", which fails closed).
pub const MAX_MAP_SCAN: u64 = 256 * 1024 * 1024;

/// Whether a source map's JSON has a `sourcesContent` array whose first entry is text (tools
/// write `[null, ...]` when they leave sources out). Streams, so a 60 MB map costs one pass;
/// `None` past `MAX_MAP_SCAN`.
pub fn embeds_sources(reader: impl std::io::Read) -> std::io::Result<Option<bool>> {
    use std::io::Read as _;
    const KEY: &[u8] = b"\"sourcesContent\"";
    /// Where the scan is: inside the key (bytes of it matched), or past it waiting for `:`,
    /// for `[`, for the first entry.
    #[derive(Clone, Copy)]
    enum At {
        Key(usize),
        Colon,
        Bracket,
        Entry,
    }
    let mut reader = reader.take(MAX_MAP_SCAN + 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = At::Key(0);
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(Some(false));
        }
        total += n as u64;
        if total > MAX_MAP_SCAN {
            return Ok(None);
        }
        for &b in &buf[..n] {
            at = match at {
                At::Key(k) if b == KEY[k] => {
                    if k + 1 == KEY.len() {
                        At::Colon
                    } else {
                        At::Key(k + 1)
                    }
                }
                // The key's only quotes are its first and last byte.
                At::Key(_) => At::Key(usize::from(b == b'"')),
                At::Colon | At::Bracket | At::Entry if b.is_ascii_whitespace() => at,
                At::Colon if b == b':' => At::Bracket,
                At::Bracket if b == b'[' => At::Entry,
                At::Entry if b == b'"' => return Ok(Some(true)),
                _ => At::Key(usize::from(b == b'"')),
            };
        }
    }
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
        assert_eq!(
            packing_command("npm", &v(&["node", "/usr/bin/npm", "install"])),
            None
        );
        // A file named like a verb is not the subcommand.
        assert_eq!(packing_command("npm", &v(&["npm", "run", "pack"])), None);
        assert_eq!(packing_command("node", &v(&["node", "pack"])), None);
    }

    #[test]
    fn leaks_are_source_maps_with_their_sources_and_credentials() {
        let map = "/w/app/dist/cli.js.map";
        let facts = |embeds_sources, sources_packed| {
            Some(MapFacts {
                embeds_sources,
                sources_packed,
            })
        };
        assert_eq!(
            leak_kind(map, "npm", facts(true, None)),
            Some("source map with embedded sources")
        );
        assert_eq!(
            leak_kind(map, "npm", facts(false, Some(true))),
            Some("source map shipped with its sources")
        );
        assert_eq!(
            leak_kind(map, "npm", facts(false, Some(false))),
            None,
            "tsc's ordinary map"
        );
        assert_eq!(leak_kind(map, "npm", facts(false, None)), None);
        assert_eq!(
            leak_kind(map, "npm", None),
            Some("source map (content unknown)")
        );
        assert_eq!(leak_kind("/w/app/.env", "npm", None), Some("dotenv"));
        assert_eq!(
            leak_kind("/w/app/.npmrc", "npm", None),
            None,
            "npm's own configuration"
        );
        assert_eq!(leak_kind("/w/app/.npmrc", "cargo", None), Some("npm-token"));
        assert_eq!(leak_kind("/w/app/dist/cli.js", "npm", None), None);
        assert_eq!(leak_kind("/w/app/package.json", "npm", None), None);
    }

    #[test]
    fn npm_packs_what_files_names_or_everything() {
        let src = vec!["src/index.ts".to_string()];
        let files = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            npm_packs_any(Some(&files(&["dist"])), false, &src),
            Some(false)
        );
        assert_eq!(
            npm_packs_any(Some(&files(&["dist/", "src"])), false, &src),
            Some(true)
        );
        assert_eq!(
            npm_packs_any(Some(&files(&["./src/"])), false, &src),
            Some(true)
        );
        assert_eq!(
            npm_packs_any(Some(&files(&["src/*.ts"])), false, &src),
            Some(true)
        );
        assert_eq!(
            npm_packs_any(Some(&files(&["lib/*.js"])), false, &src),
            Some(false)
        );
        assert_eq!(
            npm_packs_any(None, false, &src),
            Some(true),
            "no files: everything"
        );
        assert_eq!(npm_packs_any(None, true, &src), None, "ignore files decide");
        assert_eq!(
            npm_packs_any(None, false, &[]),
            Some(false),
            "no source exists"
        );
    }

    /// Reads in tiny pieces, so the key and its value are cut at every possible place.
    struct Trickle<'a>(&'a [u8], usize);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(self.0.len()).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn source_maps_embed_sources_only_with_text_in_sources_content() {
        let tsc = br#"{"version":3,"file":"index.js","sourceRoot":"","sources":["../src/index.ts"],"names":[],"mappings":"AAAA,SAAgB"}"#;
        let inlined = br#"{"version":3,"sources":["../src/index.ts"],"sourcesContent": [ "export const secret = 1;\n"],"mappings":"AAAA"}"#;
        let nulls =
            br#"{"version":3,"sources":["a.ts"],"sourcesContent":[null],"mappings":"AAAA"}"#;
        let empty = br#"{"version":3,"sources":[],"sourcesContent":[],"mappings":""}"#;
        let in_a_string = br#"{"version":3,"names":["\"sourcesContent\""],"mappings":""}"#;
        for step in [1, 2, 3, 7, 64 * 1024] {
            let judge = |text: &[u8]| embeds_sources(Trickle(text, step)).unwrap();
            assert_eq!(judge(tsc), Some(false), "step {step}");
            assert_eq!(judge(inlined), Some(true), "step {step}");
            assert_eq!(judge(nulls), Some(false), "step {step}");
            assert_eq!(judge(empty), Some(false), "step {step}");
            assert_eq!(judge(in_a_string), Some(false), "step {step}");
        }
        // A large map whose sources come last, past the first chunks.
        let mut big = br#"{"version":3,"mappings":""#.to_vec();
        big.extend(std::iter::repeat(b'A').take(3 * 64 * 1024 + 5));
        big.extend_from_slice(br#"","sourcesContent":["x"]}"#);
        assert_eq!(embeds_sources(&big[..]).unwrap(), Some(true));
    }
}
