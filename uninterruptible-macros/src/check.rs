//! Validation: small `check_*` functions over typed input. [`all`] runs every one of them and
//! combines their errors, so one compile reports every mistake.

use crate::args::{Args, Value};
use crate::shape;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn};
use uninterruptible_grammar::{Key, Literal};

/// Runs every check on the attribute and the function.
pub(crate) fn all(args: &Args, item: &ItemFn) -> syn::Result<()> {
    let mut results = vec![
        check_async(item),
        check_name(item),
        check_generics(item),
        check_arguments(args, item),
    ];
    results.extend(args.given().map(|(key, value)| check_value(key, value)));
    combine(results)
}

/// Folds results into one, keeping every error.
pub(crate) fn combine(results: impl IntoIterator<Item = syn::Result<()>>) -> syn::Result<()> {
    let mut errors: Option<syn::Error> = None;
    for error in results.into_iter().filter_map(Result::err) {
        match &mut errors {
            Some(all) => all.combine(error),
            None => errors = Some(error),
        }
    }
    errors.map_or(Ok(()), Err)
}

fn error(span: proc_macro2::Span, message: impl std::fmt::Display) -> syn::Result<()> {
    Err(syn::Error::new(span, message))
}

fn check_async(item: &ItemFn) -> syn::Result<()> {
    if item.sig.asyncness.is_none() {
        return error(
            item.sig.fn_token.span,
            "the server handler must be an `async fn`: write `async fn`",
        );
    }
    Ok(())
}

fn check_name(item: &ItemFn) -> syn::Result<()> {
    if item.sig.ident == "main" {
        return error(
            item.sig.ident.span(),
            "the handler cannot be named `main`: the attribute generates `main`; rename it, e.g. `async fn handle`",
        );
    }
    Ok(())
}

fn check_generics(item: &ItemFn) -> syn::Result<()> {
    let generics = &item.sig.generics;
    if !generics.params.is_empty() || generics.where_clause.is_some() {
        return error(
            generics.span(),
            "the server handler cannot be generic: take `uninterruptible::Stream` directly",
        );
    }
    Ok(())
}

fn check_arguments(args: &Args, item: &ItemFn) -> syn::Result<()> {
    let inputs = &item.sig.inputs;
    if let Some(FnArg::Receiver(receiver)) = inputs.first() {
        return error(
            receiver.span(),
            "the server handler is a free function and cannot take `self`: write `stream: uninterruptible::Stream`",
        );
    }
    if let (Some((_, span)), true) = (&args.datagrams, shape::argument_named(item, "Datagram")) {
        return error(
            *span,
            "this handler answers the datagrams itself: `datagrams` names a second handler, for a handler of connections; remove it",
        );
    }
    if let Some((_, span)) = &args.save {
        if args.init.is_none() {
            return error(
                *span,
                "`save` hands what `init` built to the next process: add `init = \"setup\"`, an `async fn(previous: Option<uninterruptible::Handover>) -> Result<State, E>`",
            );
        }
        if shape::argument_named(item, "Incoming") {
            return error(
                *span,
                "`save` is available to a handler of connections (`stream: uninterruptible::Stream, state: std::sync::Arc<State>`), not to one taking `Incoming`",
            );
        }
    }
    if let (Some((_, span)), true) = (&args.init, shape::argument_named(item, "Datagram")) {
        return error(
            *span,
            "`init` is not available to a datagram handler: build what it needs in your own `main` and serve with `uninterruptible::Server::run_datagrams`, or remove `init`",
        );
    }
    match (inputs.len(), &args.init) {
        // No argument: an HTTP service's builder, run once per process.
        (0, None) | (1, None) | (2, Some(_)) => Ok(()),
        (0, Some((_, span))) => error(
            *span,
            "a handler without arguments builds the HTTP service once per process: it is the initialiser; build the state in it and remove `init`",
        ),
        (1, Some((_, span))) => error(
            *span,
            "with `init`, the handler takes what it built as a second argument: write `stream: uninterruptible::Stream, state: std::sync::Arc<State>` (or `incoming: uninterruptible::Incoming, state: ...`)",
        ),
        (2, None) => error(
            inputs.iter().nth(1).span(),
            "the server handler takes one argument, the connection (`uninterruptible::Stream`); a second one is the state an initialiser builds: add `init = \"setup\"` to the attribute, or remove it",
        ),
        _ => error(
            inputs
                .iter()
                .nth(if args.init.is_some() { 2 } else { 1 })
                .span(),
            "the server handler takes the connection (`uninterruptible::Stream`) and, with `init`, the state; remove the others",
        ),
    }
}

/// A value, checked with the key's parser from the table the runtime reads the environment with:
/// the attribute accepts exactly what the runtime accepts, and says the same about the rest. A
/// list is checked item by item, so each error points at its own item.
fn check_value(key: &Key, value: &Value) -> syn::Result<()> {
    if key.literal == Literal::List {
        let items = combine(value.items.iter().map(|(item, span)| {
            (key.check)(item).or_else(|expected| {
                error(
                    *span,
                    format!("`{item}` in `{}` is invalid: expected {expected}", key.name),
                )
            })
        }));
        // Items that are each valid may still not go together (the same address twice).
        return items.and_then(|()| {
            (key.check)(&value.text).or_else(|expected| {
                error(
                    value.span,
                    format!("`{}` is invalid: expected {expected}", key.name),
                )
            })
        });
    }
    (key.check)(&value.text).or_else(|expected| {
        // As written: a number or a boolean without quotes.
        let written = match key.literal {
            Literal::Str => format!("{:?}", value.text),
            _ => value.text.clone(),
        };
        error(
            value.span,
            format!("`{} = {written}` is invalid: expected {expected}", key.name),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uninterruptible_grammar::{KEYS, SAMPLES};

    /// The attribute's verdict on `key = literal`, as a compile would give it.
    fn verdict(key: &str, literal: &str) -> bool {
        let tokens: proc_macro2::TokenStream = format!("{key} = {literal}").parse().unwrap();
        let item: ItemFn = syn::parse_quote!(
            async fn handle(s: Stream) {}
        );
        match syn::parse2::<Args>(tokens) {
            Ok(args) => all(&args, &item).is_ok(),
            Err(_) => false,
        }
    }

    #[test]
    fn the_attribute_accepts_what_the_runtime_accepts() {
        for (key, literal, accepted) in SAMPLES {
            assert_eq!(verdict(key, literal), *accepted, "{key} = {literal}");
        }
    }

    #[test]
    fn every_key_of_the_runtime_is_a_key_of_the_attribute_and_has_samples() {
        for key in KEYS {
            assert!(
                SAMPLES.iter().any(|(k, _, ok)| *k == key.name && *ok),
                "no accepted sample for `{}`",
                key.name
            );
        }
        assert!(!verdict("port", "80"), "not a key");
    }
}
