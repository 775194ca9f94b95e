// An error variant can gain fields: a pattern that names its fields needs `..`.
fn describe(error: &uninterruptible::Error) -> String {
    match error {
        uninterruptible::Error::Bind { address, source } => format!("{address}: {source}"),
        other => other.to_string(),
    }
}

fn main() {
    let _ = describe;
}
