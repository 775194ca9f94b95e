struct DatabaseDown;

async fn setup() -> Result<u32, DatabaseDown> {
    Err(DatabaseDown)
}

#[uninterruptible::server(bind = "tcp://127.0.0.1:6789", init = "setup")]
async fn echo(_stream: uninterruptible::Stream, _state: std::sync::Arc<u32>) -> std::io::Result<()> {
    Ok(())
}
