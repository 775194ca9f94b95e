//! Validation: small `check_*` functions over typed input. [`all`] runs every one of them and
//! combines their errors, so one compile reports every mistake.

use crate::args::{Args, Kind, Value};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn};

/// Runs every check on the attribute and the function.
pub(crate) fn all(args: &Args, item: &ItemFn) -> syn::Result<()> {
    let mut results = vec![
        check_async(item),
        check_name(item),
        check_generics(item),
        check_arguments(item),
    ];
    for value in &args.values {
        results.push(match (value.key, value.kind) {
            ("bind", _) => check_bind(value),
            ("allowed_networks", _) => check_networks(value),
            ("tls_version", _) => check_tls_version(value),
            ("log_level", _) => check_log_level(value),
            ("crate", _) => check_crate_path(value),
            ("ready_timeout" | "tls_handshake_timeout", _) => check_seconds(value, false),
            (_, Kind::Seconds) => check_seconds(value, true),
            (_, Kind::Count) => check_count(value),
            _ => Ok(()),
        });
    }
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

fn check_arguments(item: &ItemFn) -> syn::Result<()> {
    let inputs = &item.sig.inputs;
    if let Some(FnArg::Receiver(receiver)) = inputs.first() {
        return error(
            receiver.span(),
            "the server handler is a free function and cannot take `self`: write `stream: uninterruptible::Stream`",
        );
    }
    match inputs.len() {
        1 => Ok(()),
        0 => error(
            item.sig.paren_token.span.join(),
            "the server handler takes one argument, the connection: write `stream: uninterruptible::Stream`",
        ),
        _ => error(
            inputs.iter().nth(1).span(),
            "the server handler takes exactly one argument, the connection (`uninterruptible::Stream`); remove the others",
        ),
    }
}

/// `tcp://host:port`, `tcp://[v6]:port` or `unix:///absolute/path`, as the runtime parses it.
fn check_bind(value: &Value) -> syn::Result<()> {
    let text = value.text.as_str();
    let ok = if let Some(rest) = text.strip_prefix("tcp://") {
        tcp_host_port(rest)
    } else if let Some(path) = text.strip_prefix("unix://") {
        path.starts_with('/') && path.len() > 1
    } else {
        false
    };
    if !ok {
        return error(
            value.span,
            format!(
                "`bind = {text:?}` is not a bind address: write `tcp://host:port` (e.g. `tcp://127.0.0.1:6789`, `tcp://[::1]:6789`) or `unix:///absolute/path`"
            ),
        );
    }
    Ok(())
}

fn tcp_host_port(rest: &str) -> bool {
    let Some((host, port)) = rest.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok()),
        None => !host.is_empty() && !host.contains(':') && !host.contains('/'),
    };
    host_ok && port.parse::<u16>().is_ok()
}

fn check_networks(value: &Value) -> syn::Result<()> {
    combine(value.items.iter().map(|(item, span)| {
        let valid = item.parse::<ipnet::IpNet>().is_ok() || item.parse::<std::net::IpAddr>().is_ok();
        if valid {
            Ok(())
        } else {
            error(
                *span,
                format!(
                    "`{item}` in `allowed_networks` is not a network: write a CIDR such as `10.0.0.0/8` or `2001:db8::/32`, or a bare address"
                ),
            )
        }
    }))
}

fn check_tls_version(value: &Value) -> syn::Result<()> {
    match value.text.as_str() {
        "TLSv1_2" | "TLSv1_3" => Ok(()),
        "TLSv1_1" | "TLSv1" | "TLSv1_0" => error(
            value.span,
            format!(
                "`tls_version = {:?}` is refused: TLS 1.0 and 1.1 are deprecated (RFC 8996) and not implemented by rustls; write \"TLSv1_2\" or \"TLSv1_3\"",
                value.text
            ),
        ),
        other => error(
            value.span,
            format!("unknown `tls_version = {other:?}`: write \"TLSv1_2\" or \"TLSv1_3\""),
        ),
    }
}

fn check_log_level(value: &Value) -> syn::Result<()> {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    if LEVELS.contains(&value.text.to_ascii_lowercase().as_str()) {
        return Ok(());
    }
    error(
        value.span,
        format!(
            "unknown `log_level = {:?}`: write one of {}",
            value.text,
            LEVELS.join(", ")
        ),
    )
}

fn check_crate_path(value: &Value) -> syn::Result<()> {
    syn::parse_str::<syn::Path>(&value.text).map(drop).or_else(|_| {
        error(
            value.span,
            format!(
                "`crate = {:?}` is not a path: write the name the runtime crate has in your Cargo.toml, e.g. `crate = \"my_uninterruptible\"`",
                value.text
            ),
        )
    })
}

fn check_seconds(value: &Value, zero_ok: bool) -> syn::Result<()> {
    let seconds: f64 = value.text.parse().unwrap_or(f64::NAN);
    let ok = seconds.is_finite() && (seconds > 0.0 || zero_ok && seconds == 0.0);
    if ok && seconds < 1e9 {
        return Ok(());
    }
    let least = if zero_ok {
        "zero or more"
    } else {
        "more than zero"
    };
    error(
        value.span,
        format!(
            "`{}` is a number of seconds, {least}, e.g. `{} = 30`",
            value.key, value.key
        ),
    )
}

fn check_count(value: &Value) -> syn::Result<()> {
    match value.text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(()),
        _ => error(
            value.span,
            format!(
                "`{}` is a whole number of one or more, e.g. `{} = 1000`",
                value.key, value.key
            ),
        ),
    }
}
