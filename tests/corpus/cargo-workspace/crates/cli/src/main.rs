use describe::{markdown, Describe};

mod build_info {
    include!(concat!(env!("OUT_DIR"), "/build_info.rs"));
}

/// One step of a job and its outcome.
#[derive(Describe)]
#[allow(dead_code)]
struct Step {
    id: String,
    status: u16,
    duration_ms: u64,
}

fn main() {
    println!(
        "describe-cli {} ({}, {})\n",
        build_info::VERSION,
        build_info::PROFILE,
        build_info::RUSTC
    );
    print!("{}", markdown::<Step>());
    for code in 0..6 {
        println!("status {code}: {}", build_info::status_name(code).unwrap_or("?"));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_table() {
        assert_eq!(super::build_info::status_name(2), Some("succeeded"));
        assert_eq!(super::build_info::status_name(9), None);
        assert!(super::build_info::RUSTC.starts_with("rustc "));
        assert_eq!(super::build_info::VERSION, "0.2.0");
    }
}
