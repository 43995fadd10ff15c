use std::fs;

#[test]
fn build_serialise_verify() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("roundtrip");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("a.txt"), "alpha\n").unwrap();
    fs::write(dir.join("sub/b.bin"), [0u8, 1, 2, 3]).unwrap();

    let manifest = manifest_digest::build(&dir).unwrap();
    let paths: Vec<_> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["a.txt", "sub/b.bin"]);
    assert_eq!(manifest.entries[1].size, 4);

    let json = serde_json::to_string(&manifest).unwrap();
    let back: manifest_digest::Manifest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, manifest);
    assert!(manifest_digest::verify(&dir, &back).unwrap().is_empty());

    fs::write(dir.join("a.txt"), "tampered\n").unwrap();
    assert_eq!(manifest_digest::verify(&dir, &back).unwrap(), ["a.txt"]);
    fs::remove_dir_all(&dir).unwrap();
}
