//! Logging with `tracing`: to stdout, or appended to `LOG_PATH`.

use crate::config::{Config, LOG_PATH};
use crate::error::{Error, Source};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Opening the log file is the only thing that can fail.
pub(crate) fn init(config: &Config) -> Result<(), Error> {
    // The filter was checked when the configuration was read.
    let filter = EnvFilter::builder()
        .parse(&config.log_filter)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = match &config.log_path {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::BadFile {
                    name: Source::Env(LOG_PATH),
                    path: path.clone(),
                    reason: format!("cannot open the log file for appending: {e}"),
                })?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init()
        }
        None => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
    };
    // A subscriber already installed (by the embedding program) is left in place.
    drop(result);
    Ok(())
}
