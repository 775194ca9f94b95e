//! Sends each client the environment a program started by the handler inherits (the output of
//! `env`): the restart protocol's variables must not be in it.

use tokio::io::AsyncWriteExt;

#[uninterruptible::server(bind = "tcp://127.0.0.1:0")]
async fn child_env(mut stream: uninterruptible::Stream) -> std::io::Result<()> {
    let output = std::process::Command::new("env").output()?;
    stream.write_all(&output.stdout).await?;
    stream.shutdown().await
}
