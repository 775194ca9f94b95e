struct Incoming;

#[uninterruptible::server(bind = "tcp://127.0.0.1:1")]
async fn serve(_incoming: Incoming) {}
