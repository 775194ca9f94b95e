struct Pool;

async fn setup() -> Result<Pool, String> {
    Ok(Pool)
}

#[uninterruptible::server(bind = "tcp://127.0.0.1:6789", init = "setup")]
async fn echo(_stream: uninterruptible::Stream, _pool: &'static Pool) -> std::io::Result<()> {
    Ok(())
}
