use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, Data, DeriveInput, Fields, LitStr};

/// Derives `describe::Describe`: the type's name, its doc comment's first line and a table of
/// `(field, type)` pairs. `#[describe(skip)]` leaves a field out.
#[proc_macro_derive(Describe, attributes(describe))]
pub fn derive_describe(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let name = &input.ident;
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => named.named.iter().collect::<Vec<_>>(),
            _ => Vec::new(),
        },
        _ => {
            return syn::Error::new_spanned(name, "Describe works on structs only")
                .to_compile_error()
                .into()
        }
    };
    let mut rows = Vec::new();
    for f in fields {
        let mut skip = false;
        for attr in f.attrs.iter().filter(|a| a.path().is_ident("describe")) {
            let res = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("skip") {
                    skip = true;
                    Ok(())
                } else {
                    Err(meta.error("expected `skip`"))
                }
            });
            if let Err(e) = res {
                return e.to_compile_error().into();
            }
        }
        if skip {
            continue;
        }
        let ident = f.ident.as_ref().expect("named field").to_string();
        let ty = &f.ty;
        let ty = LitStr::new(&quote!(#ty).to_string().replace(' ', ""), proc_macro2::Span::call_site());
        rows.push(quote! { (#ident, #ty) });
    }
    let doc = input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .find_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value().trim().to_string()),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_default();
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let type_name = name.to_string();
    quote! {
        impl #impl_generics ::describe::Describe for #name #ty_generics #where_clause {
            const NAME: &'static str = #type_name;
            const DOC: &'static str = #doc;
            const FIELDS: &'static [(&'static str, &'static str)] = &[#(#rows),*];
        }
    }
    .into()
}
