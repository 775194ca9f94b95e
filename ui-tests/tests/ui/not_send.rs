#[uninterruptible::server(bind = "tcp://127.0.0.1:6789")]
async fn echo(_stream: uninterruptible::Stream) -> std::io::Result<()> {
    let held = std::rc::Rc::new(());
    std::future::ready(()).await;
    drop(held);
    Ok(())
}
