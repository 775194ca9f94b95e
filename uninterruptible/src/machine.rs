//! The serving role's decisions, as a state machine with no I/O: each event (a stop, a restart
//! asked, a restart's outcome, the old process's verdict, the handler returning, the supervisor
//! gone) moves it and says what the process does next. The serving loop feeds it and carries out
//! the steps (logs, answers, the restart task), so every ordering of events (a stop during a
//! restart, a restart asked before the verdict, an abandoned verdict) is tested here without
//! processes.

use crate::signals::Stops;

/// Where a serving process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepting, no restart in progress.
    Accepting,
    /// A restart is in progress: a new process is starting.
    Restarting,
    /// A restart was asked before the old process let go of this one (its verdict): it starts
    /// once the verdict comes.
    Deferred,
    /// The serving phase has ended: this process drains (or exits) now.
    Retiring(Ending),
}

/// How the serving phase ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// `TERM`/`INT`: this is the last process; clean up the pidfile and socket file.
    Stop,
    /// A new process is serving: leave the pidfile and socket file to it.
    HandedOver,
    /// The old process abandoned the restart that started us: it owns everything.
    Abandoned,
    /// A second `TERM`/`INT` from the same side: exit at once.
    ExitNow,
}

/// Who restarts this process, when it is not itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Restarter {
    /// It restarts itself into a new copy.
    Itself,
    /// A Server::Starter worker: `start_server` restarts it.
    ServerStarter,
    /// A serving process: the supervisor with this pid restarts it.
    Supervisor(u32),
}

/// What the process does after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing more: go on.
    Continue,
    /// Start a restart now; whoever asked waits for its outcome.
    Restart,
    /// Whoever asked waits for the restart in progress.
    Join,
    /// Whoever asked waits: the restart starts once the old process lets go of this one.
    Defer,
    /// A restart cannot be asked of this process: answer at once, with why.
    Refuse(Refusal),
    /// A stop arrived during a restart: this process stops once the restart ends.
    StopAfterRestart,
    /// The serving phase ends.
    End(Ending),
}

/// Why a restart is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    ServerStarter,
    Supervised(u32),
    Stopping,
}

impl Refusal {
    /// The reason, as `failed <reason>` gives it.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::ServerStarter => "start_server restarts its workers: send HUP to start_server",
            Refusal::Supervised(_) => "the supervisor restarts this process",
            Refusal::Stopping => "this process is stopping",
        }
    }
}

/// The serving role's state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Machine {
    phase: Phase,
    stops: Stops,
    restarter: Restarter,
    /// Started by a restart, it has not heard the old process's verdict yet.
    awaiting_verdict: bool,
}

impl Machine {
    pub(crate) fn new(restarter: Restarter, awaiting_verdict: bool) -> Machine {
        let supervisor = match restarter {
            Restarter::Supervisor(pid) => Some(pid),
            _ => None,
        };
        Machine {
            phase: Phase::Accepting,
            stops: Stops::new(supervisor),
            restarter,
            awaiting_verdict,
        }
    }

    #[cfg(test)]
    fn phase(&self) -> Phase {
        self.phase
    }

    fn end(&mut self, ending: Ending) -> Step {
        self.phase = Phase::Retiring(ending);
        Step::End(ending)
    }

    /// `TERM` or `INT` from `sender`.
    pub(crate) fn stop(&mut self, sender: u32) -> Step {
        if self.stops.record(sender) {
            return self.end(Ending::ExitNow);
        }
        match self.phase {
            Phase::Accepting => self.end(Ending::Stop),
            // Cancelling would lose what the new process accepted; finishing costs at most
            // READY_TIMEOUT, and either way this process then goes. A deferred restart is one
            // in progress: the USR1 came first.
            Phase::Restarting | Phase::Deferred => Step::StopAfterRestart,
            // While draining: a second stop from the same side cut above; this one is the
            // service manager's stop of a retiring process, which drains on.
            Phase::Retiring(_) => Step::Continue,
        }
    }

    /// `USR1`/`HUP`, or `restart` on the control socket.
    pub(crate) fn restart_asked(&mut self) -> Step {
        match self.restarter {
            Restarter::ServerStarter => return Step::Refuse(Refusal::ServerStarter),
            Restarter::Supervisor(pid) => return Step::Refuse(Refusal::Supervised(pid)),
            Restarter::Itself => {}
        }
        if self.stops.received() {
            return Step::Refuse(Refusal::Stopping);
        }
        match self.phase {
            Phase::Restarting | Phase::Deferred => Step::Join,
            Phase::Accepting if self.awaiting_verdict => {
                self.phase = Phase::Deferred;
                Step::Defer
            }
            Phase::Accepting => {
                self.phase = Phase::Restarting;
                Step::Restart
            }
            Phase::Retiring(_) => Step::Refuse(Refusal::Stopping),
        }
    }

    /// The restart in progress ended: a new process is ready (`handed_over`), or it failed.
    pub(crate) fn restart_ended(&mut self, handed_over: bool) -> Step {
        if handed_over {
            return self.end(Ending::HandedOver);
        }
        self.phase = Phase::Accepting;
        if self.stops.received() {
            return self.end(Ending::Stop);
        }
        Step::Continue
    }

    /// The old process's verdict on this one: it let go (`committed`), or abandoned the restart.
    pub(crate) fn verdict(&mut self, committed: bool) -> Step {
        self.awaiting_verdict = false;
        if let Phase::Retiring(_) = self.phase {
            return Step::Continue;
        }
        if !committed {
            return self.end(Ending::Abandoned);
        }
        // Even after a TERM: the USR1 came first, and this process retires once it ends.
        if self.phase == Phase::Deferred {
            self.phase = Phase::Restarting;
            return Step::Restart;
        }
        Step::Continue
    }

    /// The `async fn(Incoming)` handler returned while accepting, or the supervisor is gone: the
    /// process stops as if it were sent `TERM`.
    pub(crate) fn must_stop(&mut self) -> Step {
        match self.phase {
            Phase::Retiring(_) => Step::Continue,
            _ => self.end(Ending::Stop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR: u32 = 7;
    const SUPERVISOR: u32 = 40;

    fn alone() -> Machine {
        Machine::new(Restarter::Itself, false)
    }

    #[test]
    fn a_restart_then_a_handover() {
        let mut m = alone();
        assert_eq!(m.restart_asked(), Step::Restart);
        assert_eq!(
            m.restart_asked(),
            Step::Join,
            "a burst of USR1 is one restart"
        );
        assert_eq!(m.restart_ended(true), Step::End(Ending::HandedOver));
        assert_eq!(m.phase(), Phase::Retiring(Ending::HandedOver));
        assert_eq!(m.restart_asked(), Step::Refuse(Refusal::Stopping));
    }

    #[test]
    fn a_failed_restart_serves_on_and_the_next_one_starts() {
        let mut m = alone();
        assert_eq!(m.restart_asked(), Step::Restart);
        assert_eq!(m.restart_ended(false), Step::Continue);
        assert_eq!(m.phase(), Phase::Accepting);
        assert_eq!(m.restart_asked(), Step::Restart);
    }

    #[test]
    fn a_stop_during_a_restart_waits_for_its_outcome() {
        let mut m = alone();
        m.restart_asked();
        assert_eq!(m.stop(OPERATOR), Step::StopAfterRestart);
        assert_eq!(m.restart_asked(), Step::Refuse(Refusal::Stopping));
        // Failed: this process is still the last one, and stops.
        assert_eq!(m.restart_ended(false), Step::End(Ending::Stop));

        let mut m = alone();
        m.restart_asked();
        m.stop(OPERATOR);
        assert_eq!(m.restart_ended(true), Step::End(Ending::HandedOver));
    }

    #[test]
    fn a_second_stop_exits_now_whatever_is_in_progress() {
        let mut m = alone();
        m.restart_asked();
        m.stop(OPERATOR);
        assert_eq!(m.stop(OPERATOR), Step::End(Ending::ExitNow));

        let mut m = alone();
        assert_eq!(m.stop(OPERATOR), Step::End(Ending::Stop));
        // Draining: the next one from the same side cuts.
        assert_eq!(m.stop(OPERATOR), Step::End(Ending::ExitNow));
    }

    #[test]
    fn a_restart_asked_before_the_verdict_starts_once_it_comes() {
        let mut m = Machine::new(Restarter::Itself, true);
        assert_eq!(m.restart_asked(), Step::Defer);
        assert_eq!(m.restart_asked(), Step::Join);
        // A TERM now does not lose it: the USR1 came first.
        assert_eq!(m.stop(OPERATOR), Step::StopAfterRestart);
        assert_eq!(m.verdict(true), Step::Restart);
        assert_eq!(m.phase(), Phase::Restarting);
        assert_eq!(m.restart_ended(true), Step::End(Ending::HandedOver));
    }

    #[test]
    fn an_abandoned_verdict_ends_the_serving_phase() {
        let mut m = Machine::new(Restarter::Itself, true);
        assert_eq!(m.verdict(false), Step::End(Ending::Abandoned));
        let mut m = Machine::new(Restarter::Itself, true);
        assert_eq!(m.restart_asked(), Step::Defer);
        assert_eq!(m.verdict(false), Step::End(Ending::Abandoned));
        // A verdict that comes while draining changes nothing.
        let mut m = Machine::new(Restarter::Itself, true);
        m.stop(OPERATOR);
        assert_eq!(m.verdict(true), Step::Continue);
        assert_eq!(m.phase(), Phase::Retiring(Ending::Stop));
    }

    #[test]
    fn a_supervised_process_is_restarted_by_its_supervisor_only() {
        let mut m = Machine::new(Restarter::Supervisor(SUPERVISOR), true);
        assert_eq!(
            m.restart_asked(),
            Step::Refuse(Refusal::Supervised(SUPERVISOR))
        );
        assert_eq!(m.verdict(true), Step::Continue);
        // The group's TERM and the supervisor's forwarded one are one stop.
        assert_eq!(m.stop(OPERATOR), Step::End(Ending::Stop));
        assert_eq!(m.stop(SUPERVISOR), Step::Continue);
        assert_eq!(m.stop(SUPERVISOR), Step::End(Ending::ExitNow));
    }

    #[test]
    fn a_worker_is_restarted_by_start_server() {
        let mut m = Machine::new(Restarter::ServerStarter, false);
        assert_eq!(m.restart_asked(), Step::Refuse(Refusal::ServerStarter));
    }

    #[test]
    fn the_handler_returning_or_the_supervisor_gone_is_a_stop() {
        let mut m = alone();
        assert_eq!(m.must_stop(), Step::End(Ending::Stop));
        assert_eq!(m.must_stop(), Step::Continue);
        let mut m = alone();
        m.restart_asked();
        assert_eq!(m.must_stop(), Step::End(Ending::Stop));
    }
}
