use std::path::PathBuf;

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let root = PathBuf::from(args.next().context("usage: manifest-digest DIR [--verify MANIFEST]")?);
    match (args.next(), args.next()) {
        (Some(flag), Some(file)) if flag == "--verify" => {
            let text = std::fs::read_to_string(&file)?;
            let manifest: manifest_digest::Manifest = serde_json::from_str(&text)?;
            let bad = manifest_digest::verify(&root, &manifest)?;
            anyhow::ensure!(bad.is_empty(), "changed or missing: {bad:?}");
            println!("{} files OK", manifest.entries.len());
        }
        _ => {
            let manifest = manifest_digest::build(&root)?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
        }
    }
    Ok(())
}
