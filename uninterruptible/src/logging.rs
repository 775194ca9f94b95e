//! Logging with `tracing`: to stdout, or appended to `LOG_PATH`.
//!
//! Every line names the process that wrote it (pid and generation), so the lines of several
//! generations sharing one log can be told apart. Logging never takes the server down: a line
//! that cannot be written (a closed pipe, a full disk) is dropped and counted.

use crate::config::Config;
use crate::error::Error;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Lines that could not be written.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Installs the global subscriber. Opening the log file is the only thing that can fail.
pub(crate) fn init(config: &Config, generation: u64) -> Result<(), Error> {
    // The filter was checked when the configuration was read.
    let filter = EnvFilter::builder()
        .parse(&config.log_filter)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let format = Tagged {
        tag: format!("pid={} generation={generation}", std::process::id()),
    };
    let layer = tracing_subscriber::fmt::layer()
        .event_format(format)
        // Reporting a failed write would itself write, to stderr, and panic if that is closed.
        .log_internal_errors(false);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match &config.log_path {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::BadFile {
                    name: config.origins.log_path,
                    path: path.clone(),
                    reason: "cannot open the log file for appending".into(),
                    source: Some(e),
                })?;
            let layer = layer
                .with_ansi(false)
                .with_writer(Lossy(std::sync::Mutex::new(file)));
            registry.with(layer).try_init()
        }
        None => {
            let layer = layer
                .with_ansi(std::io::stdout().is_terminal())
                .with_writer(Lossy(io::stdout));
            registry.with(layer).try_init()
        }
    };
    // A subscriber already installed (by the embedding program) is left in place.
    drop(result);
    Ok(())
}

/// How many log lines could not be written so far.
pub(crate) fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// `time LEVEL pid=N generation=G: message fields`.
struct Tagged {
    tag: String,
}

impl<S, N> FormatEvent<S, N> for Tagged
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut writer)?;
        write!(writer, " {:>5} {}: ", event.metadata().level(), self.tag)?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// A writer whose failures are counted and otherwise ignored.
struct Lossy<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Lossy<M> {
    type Writer = Lossy<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Lossy(self.0.make_writer())
    }
}

impl<W: Write> Write for Lossy<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.write_all(buf).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Prints one line on stderr; a closed stderr is ignored rather than a panic (`eprintln!`).
pub(crate) fn to_stderr(line: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr(), "uninterruptible: {line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_failed_write_is_counted_not_returned() {
        let before = dropped();
        let mut lossy = Lossy(Closed);
        assert_eq!(lossy.write(b"line\n").unwrap(), 5);
        lossy.flush().unwrap();
        assert_eq!(dropped(), before + 1);
    }
}
