// The key table is read, not written: a `Key` cannot be built outside it, so keys can gain
// fields.
use uninterruptible::{Key, Literal};

fn main() {
    let _made = Key {
        name: "port",
        env: "PORT",
        also: &[],
        literal: Literal::Count,
        default: "none",
        meaning: "the port",
        accepted: "a port",
        check: |_| Ok(()),
    };
}
