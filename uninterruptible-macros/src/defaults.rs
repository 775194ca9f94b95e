//! `Defaults` for the runtime crate, generated from the key table: one setter per key, so a
//! key added to the table has its setter without another list to keep in step.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Ident, Token, Visibility};
use uninterruptible_grammar::KEYS;

/// `#[doc = ...] pub struct Defaults;`: the struct's attributes, visibility and name.
struct Input {
    attrs: Vec<Attribute>,
    vis: Visibility,
    name: Ident,
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        input.parse::<Token![struct]>()?;
        let name = input.parse()?;
        input.parse::<Token![;]>()?;
        Ok(Input { attrs, vis, name })
    }
}

pub(crate) fn defaults(input: TokenStream) -> TokenStream {
    let Input { attrs, vis, name } = match syn::parse2(input) {
        Ok(input) => input,
        Err(e) => return e.into_compile_error(),
    };
    let count = KEYS.len();
    let setters = KEYS.iter().enumerate().map(|(index, key)| {
        let setter = format_ident!("{}", key.name);
        let doc = format!(
            "Sets `{}`: {}. `{}` overrides it. Accepted: {}.",
            key.name, key.meaning, key.env, key.accepted
        );
        quote! {
            #[doc = #doc]
            #[must_use]
            pub const fn #setter(mut self, value: &'static str) -> Self {
                self.values[#index] = ::core::option::Option::Some(value);
                self
            }
        }
    });
    quote! {
        #(#attrs)*
        #[derive(Clone, Copy, Debug)]
        #vis struct #name {
            values: [::core::option::Option<&'static str>; #count],
        }

        impl #name {
            /// No defaults: every key unset.
            pub const fn new() -> Self {
                #name { values: [::core::option::Option::None; #count] }
            }

            #(#setters)*

            /// The literal given for the key at `index` in the key table.
            pub(crate) fn at(&self, index: usize) -> ::core::option::Option<&'static str> {
                self.values[index]
            }

            /// Sets the literal of the key at `index` in the key table.
            #[cfg(test)]
            pub(crate) fn set_at(&mut self, index: usize, value: &'static str) {
                self.values[index] = ::core::option::Option::Some(value);
            }
        }

        impl ::core::default::Default for #name {
            fn default() -> Self {
                Self::new()
            }
        }
    }
}
