//! Start-up work before ready: the program's initialiser (`init = "setup"`, or
//! [`Server::run_with`](crate::Server::run_with)), run once per serving process after the sockets
//! are taken and before it accepts or tells anyone it is ready.
//!
//! What it builds is the handler's state. If it fails, panics, or outlasts `READY_TIMEOUT`, the
//! process never serves: at a restart it tells the old process why (`failed <why>` on the
//! handoff connection), so the restart fails with that reason while the old process serves on;
//! at a first start it exits 1 naming it. This is the grace period tableflip and shellflip give a
//! new process, and einhorn's worker acknowledgement: a new process that cannot reach its
//! database fails the restart instead of serving errors.

use crate::handler::{Handler, HandlerOutput, NoHandler};
use crate::handover::{Carry, Handover};
use crate::incoming::Incoming;
use crate::signals::{Request, Signals};
use crate::stream::Stream;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What builds the handler: the initialiser, then the handler given its state; or a handler
/// that needs nothing built.
pub(crate) type Init<H> = Pin<Box<dyn Future<Output = Result<Handler<H>, String>> + Send>>;

/// A handler with nothing to build first.
pub(crate) fn ready<H: Send + 'static>(handler: Handler<H>) -> Init<H> {
    Box::pin(std::future::ready(Ok(handler)))
}

/// `init`, then a per-connection handler that gets what it built with each connection.
///
/// The state is an `Arc<S>`: each connection's task takes a reference (one atomic increment and
/// decrement, a few nanoseconds beside the accept and the task), and the state is dropped once
/// the last connection has ended, so a pool it holds closes its connections cleanly before the
/// process exits. A `&'static S` would cost nothing per connection but never run `Drop`.
pub(crate) fn with_state<I, IF, S, E, H, F, O>(
    init: I,
    handler: H,
) -> Init<impl Fn(Stream) -> F + Clone + Send + Sync + 'static>
where
    I: FnOnce() -> IF + Send + 'static,
    IF: Future<Output = Result<S, E>> + Send + 'static,
    S: Send + Sync + 'static,
    E: Display,
    H: Fn(Stream, Arc<S>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    Box::pin(async move {
        let state = Arc::new(init().await.map_err(|e| e.to_string())?);
        Ok(Handler::PerConnection(move |stream| {
            handler(stream, Arc::clone(&state))
        }))
    })
}

/// `init` given what the old process saved (once `carry` has received it), then a
/// per-connection handler as [`with_state`]; `save` saves the state for the next process.
pub(crate) fn with_handover<I, IF, S, E, V, H, F, O>(
    init: I,
    save: V,
    handler: H,
    carry: Arc<Carry>,
) -> Init<impl Fn(Stream) -> F + Clone + Send + Sync + 'static>
where
    I: FnOnce(Option<Handover>) -> IF + Send + 'static,
    IF: Future<Output = Result<S, E>> + Send + 'static,
    S: Send + Sync + 'static,
    E: Display,
    V: Fn(&S) -> Handover + Send + Sync + 'static,
    H: Fn(Stream, Arc<S>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    Box::pin(async move {
        let previous = carry.take_received();
        let state = Arc::new(init(previous).await.map_err(|e| e.to_string())?);
        carry.saves(&state, save);
        Ok(Handler::PerConnection(move |stream| {
            handler(stream, Arc::clone(&state))
        }))
    })
}

/// `init`, then a handler that takes the whole listener and what `init` built.
pub(crate) fn with_state_incoming<I, IF, S, E, G, F, O>(init: I, handler: G) -> Init<NoHandler>
where
    I: FnOnce() -> IF + Send + 'static,
    IF: Future<Output = Result<S, E>> + Send + 'static,
    S: Send + Sync + 'static,
    E: Display,
    G: FnOnce(Incoming, Arc<S>) -> F + Send + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    Box::pin(async move {
        let state = Arc::new(init().await.map_err(|e| e.to_string())?);
        Ok(Handler::listener(move |incoming| handler(incoming, state)))
    })
}

/// Why the process does not serve.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotStarted {
    /// The initialiser failed (its error, or its panic's message), or did not finish in time.
    Failed(String),
    /// A stop signal arrived first (its name).
    Stopped(&'static str),
}

/// The handler the initialiser built, and the restart asked while it ran.
pub(crate) struct Built<H> {
    pub(crate) handler: Handler<H>,
    /// The signal that asked a restart while the initialiser ran: the restart starts once the
    /// process serves, so that a deploy made during a long start-up is not lost.
    pub(crate) restart: Option<&'static str>,
}

/// Runs the initialiser on a task of its own (so a panic is caught and reported like an
/// error) for at most `limit`, while reading signals: a stop ends it, a restart is deferred
/// until the process serves (there is nothing to restart yet).
pub(crate) async fn run<H: Send + 'static>(
    init: Init<H>,
    limit: Duration,
    signals: &mut Signals,
) -> Result<Built<H>, NotStarted> {
    let mut restart = None;
    let mut task = tokio::spawn(init);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let failed = loop {
        tokio::select! {
            joined = &mut task => break match joined {
                Ok(Ok(handler)) => return Ok(Built { handler, restart }),
                Ok(Err(e)) => e,
                Err(e) if e.is_panic() => format!("it panicked: {}", panic_message(e.into_panic())),
                Err(e) => e.to_string(),
            },
            () = &mut deadline => {
                task.abort();
                break format!("it did not finish within {limit:?} (READY_TIMEOUT)");
            }
            received = signals.recv() => match received.request {
                Request::Stop(name) => {
                    task.abort();
                    return Err(NotStarted::Stopped(name));
                }
                Request::Restart(name) => {
                    tracing::info!("{name} received while starting: restarting once this process serves");
                    restart = Some(name);
                }
            },
        }
    };
    Err(NotStarted::Failed(one_line(&failed)))
}

/// The longest reason a failed start passes on, in bytes.
const MAX_REASON: usize = 2048;

/// The program's reason as one line of at most [`MAX_REASON`] bytes (and a note of what was cut):
/// it goes on one line of stderr, of the handoff connection, of the control socket's answer and
/// of systemd's `STATUS=`, where a line break would end it (in a notification, the next line
/// would be read as a field of its own, `READY=1` or `MAINPID=`), and a megabyte would hold up
/// each of them.
fn one_line(why: &str) -> String {
    let pieces = why.split(char::is_control).map(str::trim);
    let line = pieces
        .filter(|piece| !piece.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if line.len() <= MAX_REASON {
        return line;
    }
    let cut = (0..=MAX_REASON)
        .rev()
        .find(|&i| line.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}... ({} more bytes)", &line[..cut], line.len() - cut)
}

/// What a panic said, when it said it with a string.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "a panic without a message".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(result: Result<u32, &'static str>) -> Init<NoHandler> {
        Box::pin(async move {
            let n = result?;
            assert!(n < 100, "n is {n}, too big");
            Ok(Handler::PerConnection(
                (|_stream| std::future::ready(())) as NoHandler,
            ))
        })
    }

    /// What `run` says of an initialiser that fails with `why`.
    async fn reason(why: &str, signals: &mut Signals) -> String {
        let why = why.to_owned();
        let failing: Init<NoHandler> = Box::pin(async move { Err(why) });
        match run(failing, Duration::from_secs(5), signals).await {
            Err(NotStarted::Failed(why)) => why,
            _ => unreachable!("it fails"),
        }
    }

    #[tokio::test]
    async fn a_reason_on_several_lines_or_of_a_megabyte_is_passed_on_as_one_short_line() {
        crate::signals::block().unwrap();
        let mut signals = Signals::register().unwrap();
        // Read as a notification, the second line would say the service is ready.
        let lines = "database down\nREADY=1\r\n\tMAINPID=1\n";
        assert_eq!(
            reason(lines, &mut signals).await,
            "database down READY=1 MAINPID=1"
        );
        // A megabyte, cut where a character begins.
        let long = format!("x{}", "é".repeat(1 << 19));
        let kept = format!("x{}", "é".repeat((MAX_REASON - 1) / 2));
        assert_eq!(
            reason(&long, &mut signals).await,
            format!("{kept}... (1046530 more bytes)")
        );
    }

    #[tokio::test]
    async fn an_initialiser_that_fails_or_panics_or_outlasts_its_limit_says_why() {
        crate::signals::block().unwrap();
        let mut signals = Signals::register().unwrap();
        let limit = Duration::from_secs(5);
        assert!(run(init(Ok(1)), limit, &mut signals).await.is_ok());
        assert_eq!(
            run(init(Err("database unreachable")), limit, &mut signals)
                .await
                .err(),
            Some(NotStarted::Failed("database unreachable".into()))
        );
        assert_eq!(
            run(init(Ok(100)), limit, &mut signals).await.err(),
            Some(NotStarted::Failed("it panicked: n is 100, too big".into()))
        );
        let slow: Init<NoHandler> = Box::pin(std::future::pending());
        assert_eq!(
            run(slow, Duration::from_millis(50), &mut signals)
                .await
                .err(),
            Some(NotStarted::Failed(
                "it did not finish within 50ms (READY_TIMEOUT)".into()
            ))
        );
    }
}
