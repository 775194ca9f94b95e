async fn setup() -> Result<u32, String> {
    Ok(1)
}

#[uninterruptible::server(bind = "tcp://127.0.0.1:6789", init = "setup")]
async fn serve(_incoming: uninterruptible::Incoming) -> std::io::Result<()> {
    Ok(())
}
