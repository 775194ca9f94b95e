#[uninterruptible::server(bind = "sctp://0.0.0.0:53", log_level = "loud")]
fn echo() {}
