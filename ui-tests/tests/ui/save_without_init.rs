fn save(_: &u32) -> uninterruptible::Handover {
    uninterruptible::Handover::new(1, Vec::new())
}

#[uninterruptible::server(bind = "tcp://127.0.0.1:6789", save = "save")]
async fn echo(_stream: uninterruptible::Stream) -> std::io::Result<()> {
    Ok(())
}
