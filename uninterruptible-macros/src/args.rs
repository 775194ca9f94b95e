//! Parsing: the attribute's `key = literal` pairs into typed [`Args`] that keep each value's span.
//!
//! Each key is looked up once, here, in the key table shared with the runtime; its value goes in
//! that key's slot, and a repeat is refused. Only the literal's *kind* is checked here (a string,
//! a number, a list); what it says is checked in `check`, with the runtime's own parsers.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprArray, ExprLit, Ident, Lit, Token};
use uninterruptible_grammar::{KEYS, Key, Literal, literal_example};

/// The key that is not configuration: the path of the runtime crate when it is renamed.
const CRATE: &str = "crate";
/// The key that names the initialiser: an `async fn() -> Result<S, E>` run before ready.
const INIT: &str = "init";
/// The key that names the function saving the state for the next process.
const SAVE: &str = "save";
/// The key that names a datagram handler beside the main one.
const DATAGRAMS: &str = "datagrams";
/// What `datagrams` must name, as its error says.
const DATAGRAMS_SHAPE: &str = "`datagrams` names an `async fn(datagram: uninterruptible::Datagram) -> std::io::Result<()>` that answers the `udp://` and `unixgram://` listeners beside this handler: write `datagrams = \"answer\"`";

/// One literal value with the span of the tokens that wrote it.
pub(crate) struct Value {
    /// The value as text, in the form the matching environment variable takes.
    pub(crate) text: String,
    /// For lists: each item with its own span.
    pub(crate) items: Vec<(String, Span)>,
    pub(crate) span: Span,
}

/// The parsed attribute: a slot per key of the table (in its order), and `crate`.
pub(crate) struct Args {
    pub(crate) values: Vec<Option<Value>>,
    pub(crate) krate: Option<(syn::Path, Span)>,
    /// `init = "setup"`: the initialiser's path, spanned at the literal.
    pub(crate) init: Option<(syn::Path, Span)>,
    /// `save = "save"`: the path of the function saving `init`'s state for the next process.
    pub(crate) save: Option<(syn::Path, Span)>,
    /// `datagrams = "answer"`: a datagram handler beside the main one.
    pub(crate) datagrams: Option<(syn::Path, Span)>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            values: KEYS.iter().map(|_| None).collect(),
            krate: None,
            init: None,
            save: None,
            datagrams: None,
        }
    }
}

impl Args {
    /// Each key given, with its value.
    pub(crate) fn given(&self) -> impl Iterator<Item = (&'static Key, &Value)> {
        KEYS.iter()
            .zip(&self.values)
            .filter_map(|(key, value)| Some((key, value.as_ref()?)))
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
            let name = pair.key.unraw().to_string();
            let twice = || {
                syn::Error::new(
                    pair.key.span(),
                    format!("`{name}` is given twice; keep one"),
                )
            };
            if name == CRATE {
                match crate_path(&pair.value) {
                    Ok(_) if args.krate.is_some() => push(twice()),
                    Ok(path) => args.krate = Some(path),
                    Err(e) => push(e),
                }
                continue;
            }
            if name == INIT {
                match init_path(&pair.value) {
                    Ok(_) if args.init.is_some() => push(twice()),
                    Ok(path) => args.init = Some(path),
                    Err(e) => push(e),
                }
                continue;
            }
            if name == DATAGRAMS {
                match function_path(&pair.value, DATAGRAMS_SHAPE) {
                    Ok(_) if args.datagrams.is_some() => push(twice()),
                    Ok(path) => args.datagrams = Some(path),
                    Err(e) => push(e),
                }
                continue;
            }
            if name == SAVE {
                match function_path(&pair.value, SAVE_SHAPE) {
                    Ok(_) if args.save.is_some() => push(twice()),
                    Ok(path) => args.save = Some(path),
                    Err(e) => push(e),
                }
                continue;
            }
            let Some(index) = KEYS.iter().position(|k| k.name == name) else {
                let valid: Vec<&str> = KEYS
                    .iter()
                    .map(|k| k.name)
                    .chain([CRATE, INIT, SAVE, DATAGRAMS])
                    .collect();
                push(syn::Error::new(
                    pair.key.span(),
                    format!("unknown key `{name}`; valid keys are: {}", valid.join(", ")),
                ));
                continue;
            };
            match literal(&KEYS[index], &pair.value) {
                Ok(_) if args.values[index].is_some() => push(twice()),
                Ok(value) => args.values[index] = Some(value),
                Err(e) => push(e),
            }
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(args),
        }
    }
}

/// The literal as text, if it is of the key's kind.
fn literal(key: &Key, expr: &Expr) -> syn::Result<Value> {
    let span = expr.span();
    let value = |text: String, items: Vec<(String, Span)>| Value { text, items, span };
    let wrong = || {
        syn::Error::new(
            span,
            format!(
                "`{}` takes a literal: write `{}`",
                key.name,
                literal_example(key)
            ),
        )
    };
    let Expr::Lit(ExprLit { lit, .. }) = expr else {
        return match (key.literal, expr) {
            (Literal::List, Expr::Array(array)) => list(key, array).map(|items| {
                let text = items
                    .iter()
                    .map(|(i, _)| i.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                value(text, items)
            }),
            _ => Err(wrong()),
        };
    };
    match (key.literal, lit) {
        (Literal::Str, Lit::Str(s)) => Ok(value(s.value(), vec![])),
        (Literal::List, Lit::Str(s)) => {
            let text = s.value();
            let items = text
                .split(',')
                .map(|item| (item.trim().to_owned(), s.span()))
                .collect();
            Ok(value(text, items))
        }
        (Literal::Seconds | Literal::Count, Lit::Int(i)) => {
            Ok(value(i.base10_digits().to_owned(), vec![]))
        }
        (Literal::Seconds, Lit::Float(f)) => Ok(value(f.base10_digits().to_owned(), vec![])),
        (Literal::Bool, Lit::Bool(b)) => Ok(value(b.value.to_string(), vec![])),
        _ => Err(wrong()),
    }
}

fn list(key: &Key, array: &ExprArray) -> syn::Result<Vec<(String, Span)>> {
    array
        .elems
        .iter()
        .map(|elem| match elem {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => Ok((s.value().trim().to_owned(), s.span())),
            other => Err(syn::Error::new(
                other.span(),
                format!(
                    "`{}` items are string literals: write `{}`",
                    key.name,
                    literal_example(key)
                ),
            )),
        })
        .collect()
}

/// `crate = "path"`: the runtime crate's name in the user's Cargo.toml.
fn crate_path(expr: &Expr) -> syn::Result<(syn::Path, Span)> {
    let Expr::Lit(ExprLit {
        lit: Lit::Str(s), ..
    }) = expr
    else {
        return Err(syn::Error::new(
            expr.span(),
            "`crate` takes a literal: write `crate = \"...\"`",
        ));
    };
    syn::parse_str::<syn::Path>(&s.value())
        .map(|path| (path, s.span()))
        .map_err(|_| {
            syn::Error::new(
                s.span(),
                format!(
                    "`crate = {:?}` is not a path: write the name the runtime crate has in your Cargo.toml, e.g. `crate = \"my_uninterruptible\"`",
                    s.value()
                ),
            )
        })
}

/// What `save` must name, as its error says.
const SAVE_SHAPE: &str = "`save` names a `fn(&State) -> uninterruptible::Handover` that saves what `init` built for the next process: write `save = \"save\"`";

/// `init = "setup"`: the path of the initialiser, an `async fn() -> Result<S, E>`.
fn init_path(expr: &Expr) -> syn::Result<(syn::Path, Span)> {
    function_path(
        expr,
        "`init` names the initialiser, an `async fn() -> Result<State, E>`: write `init = \"setup\"`",
    )
}

/// A string literal holding a path to a function; else `wrong` at the value.
fn function_path(expr: &Expr, wrong: &str) -> syn::Result<(syn::Path, Span)> {
    let wrong = |span| syn::Error::new(span, wrong);
    let Expr::Lit(ExprLit {
        lit: Lit::Str(s), ..
    }) = expr
    else {
        return Err(wrong(expr.span()));
    };
    syn::parse_str::<syn::Path>(&s.value())
        .map(|path| (path, s.span()))
        .map_err(|_| wrong(s.span()))
}
