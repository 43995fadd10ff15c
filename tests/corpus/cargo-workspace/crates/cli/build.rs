//! Generates `$OUT_DIR/build_info.rs`: the crate's version, the compiler's version and a table of
//! status codes from `status-codes.txt` (so editing that file reruns this script).

use std::{env, fs, path::PathBuf, process::Command};

use quote::quote;

fn main() {
    println!("cargo:rerun-if-changed=status-codes.txt");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let version = env::var("CARGO_PKG_VERSION").unwrap();
    let profile = env::var("PROFILE").unwrap();

    let table = fs::read_to_string("status-codes.txt").expect("status-codes.txt");
    let (codes, names): (Vec<u16>, Vec<String>) = table
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (code, name) = l.split_once(' ').expect("CODE NAME");
            (code.parse::<u16>().expect("numeric code"), name.trim().to_string())
        })
        .unzip();

    let tokens = quote! {
        pub const VERSION: &str = #version;
        pub const RUSTC: &str = #rustc_version;
        pub const PROFILE: &str = #profile;
        pub fn status_name(code: u16) -> Option<&'static str> {
            match code {
                #(#codes => Some(#names),)*
                _ => None,
            }
        }
    };
    fs::write(out.join("build_info.rs"), tokens.to_string()).expect("writing build_info.rs");
}
