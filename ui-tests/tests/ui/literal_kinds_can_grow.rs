// A match on the kinds of literal needs a `_` arm, so that kinds can be added with new keys.
use uninterruptible::{KEYS, Literal};

fn main() {
    let _example = match KEYS[0].literal {
        Literal::Str => "\"...\"",
        Literal::List => "[\"...\"]",
        Literal::Seconds => "30",
        Literal::Count => "1000",
        Literal::Bool => "true",
    };
}
