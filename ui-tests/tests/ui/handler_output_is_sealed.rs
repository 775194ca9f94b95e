// `HandlerOutput` is sealed: a handler returns `std::io::Result<()>` or `()`, and a type of the
// user's cannot be made into a third.
struct Done;

impl uninterruptible::HandlerOutput for Done {
    fn into_result(self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {}
