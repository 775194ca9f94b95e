//! One server for both kinds of listener, as a DNS server answers over UDP and TCP on one port:
//! a line echo for connections and a datagram echo, with `Server::datagrams` beside
//! `Server::run`. Each answer says which way it came (`tcp: `, `udp: `).

use std::process::ExitCode;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn main() -> ExitCode {
    let defaults = uninterruptible::Defaults::new().bind("tcp://127.0.0.1:0,udp://127.0.0.1:0");
    let config = match uninterruptible::Config::from_env(defaults) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(e.exit_status());
        }
    };
    uninterruptible::Server::new(config)
        .datagrams(|datagram: uninterruptible::Datagram| async move {
            let mut answer = b"udp: ".to_vec();
            answer.extend_from_slice(datagram.data());
            datagram.reply(&answer).await
        })
        .run(|stream: uninterruptible::Stream| async move {
            let (reader, mut writer) = tokio::io::split(stream);
            let mut line = String::new();
            BufReader::new(reader).read_line(&mut line).await?;
            writer.write_all(format!("tcp: {line}").as_bytes()).await
        })
}
