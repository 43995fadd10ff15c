//! Static descriptions of data types: `#[derive(Describe)]` and a Markdown renderer.

pub use derive_describe::Describe;

pub trait Describe {
    const NAME: &'static str;
    const DOC: &'static str;
    const FIELDS: &'static [(&'static str, &'static str)];
}

/// A Markdown table of `T`'s fields.
pub fn markdown<T: Describe>() -> String {
    let mut out = format!("### `{}`\n\n", T::NAME);
    if !T::DOC.is_empty() {
        out.push_str(T::DOC);
        out.push_str("\n\n");
    }
    out.push_str("| field | type |\n| --- | --- |\n");
    for (name, ty) in T::FIELDS {
        out.push_str(&format!("| `{name}` | `{ty}` |\n"));
    }
    out
}
