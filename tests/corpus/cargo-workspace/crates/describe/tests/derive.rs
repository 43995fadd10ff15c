use describe::{markdown, Describe};

/// A build job as the scheduler sees it.
#[derive(Describe)]
#[allow(dead_code)]
struct Job {
    id: u64,
    name: String,
    tags: Vec<String>,
    #[describe(skip)]
    secret_token: Option<String>,
}

#[derive(Describe)]
#[allow(dead_code)]
struct Pair<T> {
    left: T,
    right: T,
}

#[test]
fn fields_in_order_without_skipped() {
    assert_eq!(Job::NAME, "Job");
    assert_eq!(Job::DOC, "A build job as the scheduler sees it.");
    assert_eq!(
        Job::FIELDS,
        &[("id", "u64"), ("name", "String"), ("tags", "Vec<String>")]
    );
}

#[test]
fn generics_and_markdown() {
    assert_eq!(<Pair<u8>>::FIELDS, &[("left", "T"), ("right", "T")]);
    let md = markdown::<Job>();
    assert!(md.starts_with("### `Job`\n\nA build job"));
    assert!(md.contains("| `tags` | `Vec<String>` |"));
    assert!(!md.contains("secret"));
}
