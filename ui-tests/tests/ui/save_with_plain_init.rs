async fn setup() -> Result<u32, String> {
    Ok(1)
}

fn save(_: &u32) -> uninterruptible::Handover {
    uninterruptible::Handover::new(1, Vec::new())
}

#[uninterruptible::server(bind = "tcp://127.0.0.1:6789", init = "setup", save = "save")]
async fn echo(_stream: uninterruptible::Stream, _state: std::sync::Arc<u32>) -> std::io::Result<()> {
    Ok(())
}
