struct Echo;

impl Echo {
    #[uninterruptible::server(bind = "tcp://127.0.0.1:6789")]
    async fn echo(self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {}
