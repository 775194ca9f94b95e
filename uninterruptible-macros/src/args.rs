//! Parsing: the attribute's `key = literal` pairs into typed [`Args`] that keep each value's span.
//!
//! Only the *shape* is checked here (known key, said once, literal of the right type); what the
//! literal says (a bind address, a CIDR, a TLS version) is checked in `check`.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprArray, ExprLit, Ident, Lit, Token};

/// What a key's literal must be.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string literal.
    Str,
    /// A string of comma-separated items, or an array of string literals.
    List,
    /// A non-negative number of seconds, integer or decimal.
    Seconds,
    /// A positive integer.
    Count,
    /// `true` or `false`.
    Bool,
}

impl Kind {
    fn example(self, key: &str) -> String {
        match self {
            Kind::Str => format!("{key} = \"...\""),
            Kind::List => {
                format!("{key} = \"10.0.0.0/8, ::1\" or {key} = [\"10.0.0.0/8\", \"::1\"]")
            }
            Kind::Seconds => format!("{key} = 30 (seconds)"),
            Kind::Count => format!("{key} = 1000"),
            Kind::Bool => format!("{key} = true"),
        }
    }
}

/// Every key the attribute accepts, with the type of its literal. `crate` is the path to the
/// runtime crate when it is renamed; the others are the configuration keys of the runtime.
pub(crate) const KEYS: &[(&str, Kind)] = &[
    ("bind", Kind::Str),
    ("start_command", Kind::Str),
    ("pidfile", Kind::Str),
    ("log_path", Kind::Str),
    ("log_level", Kind::Str),
    ("tls_key", Kind::Str),
    ("tls_certificate", Kind::Str),
    ("tls_version", Kind::Str),
    ("tls_handshake_timeout", Kind::Seconds),
    ("verify_client_tls_certificate", Kind::Bool),
    ("client_tls_certificate_ca", Kind::Str),
    ("allowed_networks", Kind::List),
    ("drain_timeout", Kind::Seconds),
    ("ready_timeout", Kind::Seconds),
    ("max_connections", Kind::Count),
    ("crate", Kind::Str),
];

/// One literal value with the span of the tokens that wrote it.
#[derive(Clone)]
pub(crate) struct Value {
    pub(crate) key: &'static str,
    pub(crate) kind: Kind,
    /// The value as text, in the form the matching environment variable takes.
    pub(crate) text: String,
    /// For lists: each item with its own span.
    pub(crate) items: Vec<(String, Span)>,
    pub(crate) span: Span,
}

/// The parsed attribute: each key at most once.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) values: Vec<Value>,
}

impl Args {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.values.iter().find(|v| v.key == key)
    }
}

struct Pair {
    key: Ident,
    value: Expr,
}

impl Parse for Pair {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        // `parse_any` so that the keyword `crate` is a key like the others.
        let key = Ident::parse_any(input)?;
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        Ok(Pair { key, value })
    }
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let pairs = Punctuated::<Pair, Token![,]>::parse_terminated(input)?;
        let mut args = Args::default();
        let mut errors: Option<syn::Error> = None;
        let mut push = |e: syn::Error| match &mut errors {
            Some(all) => all.combine(e),
            None => errors = Some(e),
        };
        for pair in pairs {
            match typed(&pair) {
                Ok(value) => {
                    if args.get(value.key).is_some() {
                        push(syn::Error::new(
                            pair.key.span(),
                            format!("`{}` is given twice; keep one", value.key),
                        ));
                    } else {
                        args.values.push(value);
                    }
                }
                Err(e) => push(e),
            }
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(args),
        }
    }
}

fn typed(pair: &Pair) -> syn::Result<Value> {
    let name = pair.key.unraw().to_string();
    let Some(&(key, kind)) = KEYS.iter().find(|(k, _)| *k == name) else {
        let valid: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        return Err(syn::Error::new(
            pair.key.span(),
            format!("unknown key `{name}`; valid keys are: {}", valid.join(", ")),
        ));
    };
    let wrong = || {
        syn::Error::new(
            pair.value.span(),
            format!("`{key}` takes a literal: write `{}`", kind.example(key)),
        )
    };
    let span = pair.value.span();
    let value = |text: String, items: Vec<(String, Span)>| Value {
        key,
        kind,
        text,
        items,
        span,
    };
    match (kind, &pair.value) {
        (
            Kind::Str,
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }),
        ) => Ok(value(s.value(), vec![])),
        (
            Kind::List,
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }),
        ) => {
            let text = s.value();
            let items = text
                .split(',')
                .map(|item| (item.trim().to_owned(), s.span()))
                .collect();
            Ok(value(text, items))
        }
        (Kind::List, Expr::Array(ExprArray { elems, .. })) => {
            let mut items = Vec::new();
            for elem in elems {
                match elem {
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(s), ..
                    }) => items.push((s.value().trim().to_owned(), s.span())),
                    other => {
                        return Err(syn::Error::new(
                            other.span(),
                            format!(
                                "`{key}` items are string literals: write `{}`",
                                kind.example(key)
                            ),
                        ));
                    }
                }
            }
            let text = items
                .iter()
                .map(|(i, _)| i.as_str())
                .collect::<Vec<_>>()
                .join(",");
            Ok(value(text, items))
        }
        (
            Kind::Seconds,
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }),
        ) => Ok(value(i.base10_digits().to_owned(), vec![])),
        (
            Kind::Seconds,
            Expr::Lit(ExprLit {
                lit: Lit::Float(f), ..
            }),
        ) => Ok(value(f.base10_digits().to_owned(), vec![])),
        (
            Kind::Count,
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }),
        ) => Ok(value(i.base10_digits().to_owned(), vec![])),
        (
            Kind::Bool,
            Expr::Lit(ExprLit {
                lit: Lit::Bool(b), ..
            }),
        ) => Ok(value(b.value.to_string(), vec![])),
        _ => Err(wrong()),
    }
}
