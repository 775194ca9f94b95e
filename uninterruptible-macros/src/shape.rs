//! The handler's shape, read from its signature: the checks and the expansion both ask it.

use syn::{FnArg, ItemFn};

/// Whether the handler's first argument type is written `name` (`uninterruptible::Incoming`, or
/// imported `Incoming`): the whole-listener shape, or `Datagram`: the datagram shape.
pub(crate) fn argument_named(item_fn: &ItemFn, name: &str) -> bool {
    let Some(FnArg::Typed(pat)) = item_fn.sig.inputs.first() else {
        return false;
    };
    match &*pat.ty {
        syn::Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == name),
        _ => false,
    }
}
