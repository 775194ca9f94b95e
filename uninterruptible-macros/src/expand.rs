//! Expansion: the user's function, unchanged, plus a `fn main` of a few lines that calls the
//! runtime through `__private`. Expansion sees only checked input.

use crate::args::Args;
use crate::{check, shape};
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType};

pub(crate) fn server(args: TokenStream, item: TokenStream) -> TokenStream {
    let item_fn: ItemFn = match syn::parse2(item.clone()) {
        Ok(item_fn) => item_fn,
        Err(error) => {
            let error = syn::Error::new(
                error.span(),
                "#[uninterruptible::server] goes on an `async fn(stream: uninterruptible::Stream)`",
            );
            return with_error(item, error, false);
        }
    };
    let parsed = syn::parse2::<Args>(args);
    let checked = match &parsed {
        Ok(args) => check::all(args, &item_fn),
        Err(error) => check::combine([Err(error.clone()), check::all(&Args::default(), &item_fn)]),
    };
    match (parsed, checked) {
        (Ok(args), Ok(())) => expand(&args, &item_fn),
        (_, Err(error)) | (Err(error), _) => with_error(item, error, item_fn.sig.ident == "main"),
    }
}

/// The user's item as written plus the errors, and an empty `main`, so rustc reports only the
/// real mistake and not a missing `main`. A handler that is itself named `main` is kept in a
/// module of its own, where rustc does not take it for the program's entry point.
fn with_error(item: TokenStream, error: syn::Error, named_main: bool) -> TokenStream {
    let error = error.into_compile_error();
    let item = if named_main {
        quote! {
            #[allow(dead_code, unused_imports)]
            mod __uninterruptible_handler {
                use super::*;
                #item
            }
        }
    } else {
        item
    };
    quote!(#item #error fn main() {})
}

fn expand(args: &Args, item_fn: &ItemFn) -> TokenStream {
    let krate = crate_path(args);
    let name = &item_fn.sig.ident;
    let defaults = args.given().map(|(key, value)| {
        let setter = format_ident!("{}", key.name);
        let text = &value.text;
        quote!(.#setter(#text))
    });

    // The user's own type tokens in a qualified path, so that a wrong type is reported by rustc
    // at the user's signature.
    let arg_ty = match item_fn.sig.inputs.first() {
        Some(FnArg::Typed(pat)) => pat.ty.to_token_stream(),
        _ => quote!(#krate::Stream),
    };
    let ret_span = match &item_fn.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => name.span(),
    };
    // The shape, told by the argument's type: `Incoming` takes the whole listener, `Datagram`
    // each datagram; anything else must be `Stream` (a task per connection), which rustc checks
    // at the user's type.
    let (runner, argument) = if shape::argument_named(item_fn, "Incoming") {
        let incoming = quote_spanned!(arg_ty.span()=>
            <#arg_ty as #krate::__private::IsIncoming>::from_incoming(__uninterruptible_arg)
        );
        (quote!(#krate::__private::run_incoming), incoming)
    } else if shape::argument_named(item_fn, "Datagram") {
        let datagram = quote_spanned!(arg_ty.span()=>
            <#arg_ty as #krate::__private::IsDatagram>::from_datagram(__uninterruptible_arg)
        );
        (quote!(#krate::__private::run_datagrams), datagram)
    } else {
        let stream = quote_spanned!(arg_ty.span()=>
            <#arg_ty as #krate::__private::IsStream>::from_stream(__uninterruptible_arg)
        );
        (quote!(#krate::__private::run), stream)
    };
    // Spanned on the return type: a handler whose output is not `io::Result<()>` or `()`, or
    // whose future is not `Send`, is reported there.
    let run = match &args.init {
        // No argument: `async fn app() -> Result<Service, E>`, served as HTTP.
        None if item_fn.sig.inputs.is_empty() => {
            let run_path = respan(quote!(#krate::__private::run_http), ret_span);
            quote_spanned!(ret_span=> #run_path(__uninterruptible_config, #name))
        }
        None => {
            let run_path = respan(runner, ret_span);
            quote_spanned!(ret_span=>
                #run_path(
                    __uninterruptible_config,
                    |__uninterruptible_arg| #name(#argument),
                )
            )
        }
        Some((init, init_span)) => {
            let state_ty = match item_fn.sig.inputs.iter().nth(1) {
                Some(FnArg::Typed(pat)) => pat.ty.to_token_stream(),
                _ => quote!(_),
            };
            let state = quote_spanned!(state_ty.span()=>
                <#state_ty as #krate::__private::IsState<_>>::from_state(__uninterruptible_state)
            );
            let init = respan(init.to_token_stream(), *init_span);
            let checker = if args.save.is_some() {
                quote!(#krate::__private::handover_init)
            } else {
                quote!(#krate::__private::init)
            };
            let check = respan(checker, *init_span);
            let init = quote_spanned!(*init_span=> #check(#init));
            let runner = if args.save.is_some() {
                quote!(#krate::__private::run_with_handover)
            } else if shape::argument_named(item_fn, "Incoming") {
                quote!(#krate::__private::run_incoming_with)
            } else {
                quote!(#krate::__private::run_with)
            };
            // `save`, checked at its literal, between `init` and the handler.
            let save = args.save.as_ref().map(|(save, save_span)| {
                let save = respan(save.to_token_stream(), *save_span);
                let check = respan(quote!(#krate::__private::save), *save_span);
                quote_spanned!(*save_span=> #check(#save),)
            });
            let run_path = respan(runner, ret_span);
            quote_spanned!(ret_span=>
                #run_path(
                    __uninterruptible_config,
                    #init,
                    #save
                    |__uninterruptible_arg, __uninterruptible_state| #name(#argument, #state),
                )
            )
        }
    };

    // A datagram handler beside the main one, checked at its literal.
    let datagrams = args.datagrams.as_ref().map(|(path, span)| {
        let path = respan(path.to_token_stream(), *span);
        let with = respan(quote!(#krate::__private::with_datagrams), *span);
        quote_spanned!(*span=>
            let __uninterruptible_config = #with(__uninterruptible_config, #path);
        )
    });

    quote! {
        #item_fn

        fn main() -> ::std::process::ExitCode {
            let __uninterruptible_config = #krate::__private::config_or_exit(
                #krate::__private::Defaults::new() #(#defaults)*
            );
            #datagrams
            #run
        }
    }
}

/// `tokens` with every span set to `span` (for paths, which hold no groups).
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
}

/// `::uninterruptible`, or the path given with `crate = "..."` for a renamed dependency.
fn crate_path(args: &Args) -> TokenStream {
    let Some((path, span)) = &args.krate else {
        return quote!(::uninterruptible);
    };
    let plain = path.leading_colon.is_none()
        && path.segments.len() == 1
        && !["crate", "self", "super"].contains(&path.segments[0].ident.to_string().as_str());
    if plain {
        quote_spanned!(*span=> ::#path)
    } else {
        quote_spanned!(*span=> #path)
    }
}
