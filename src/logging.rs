//! Logging for the programs: to the terminal (standard error, so standard
//! output stays free for `listening on ...`) and to a log file, each line
//! with a UTC timestamp, the level and the name of the thread that wrote it.
//!
//! Also what keeps the network from writing the log for us: text that came
//! from it is escaped before it is logged ([`printable`]), and warnings that
//! anyone who can connect may cause are held to a few a second
//! ([`network_warning`]).

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use log::{debug, warn, LevelFilter};
use parking_lot::Mutex;
use simplelog::{
    ColorChoice, CombinedLogger, ConfigBuilder, SharedLogger, TermLogger, TerminalMode,
    ThreadLogMode, WriteLogger,
};

/// Starts logging at `level` to the terminal and, when given, appending to
/// `file`. Fails when the file cannot be opened (the message names it).
pub fn init(level: LevelFilter, file: Option<&Path>) -> Result<(), String> {
    init_with_terminal(level, level, file)
}

/// As [`init`], with the terminal at `terminal` (an interactive shell shows
/// only warnings there, while its log file has everything at `level`).
pub fn init_with_terminal(
    level: LevelFilter,
    terminal: LevelFilter,
    file: Option<&Path>,
) -> Result<(), String> {
    let config = ConfigBuilder::new()
        .set_thread_level(LevelFilter::Error)
        .set_thread_mode(ThreadLogMode::Names)
        .set_thread_padding(simplelog::ThreadPadding::Right(16))
        .set_target_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .set_time_format_rfc3339()
        .build();
    let mut loggers: Vec<Box<dyn SharedLogger>> = vec![TermLogger::new(
        terminal,
        config.clone(),
        TerminalMode::Stderr,
        // Colours only on a real terminal, never in a redirected stream.
        if std::io::stderr().is_terminal() {
            ColorChoice::Auto
        } else {
            ColorChoice::Never
        },
    )];
    if let Some(path) = file {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
        loggers.push(WriteLogger::new(level, config, file));
    }
    CombinedLogger::init(loggers).map_err(|e| format!("cannot start logging: {e}"))
}

/// `text` from the network, fit for one line of the log: control
/// characters are written escaped (`\r`, `\u{1b}`), so that a carriage
/// return cannot draw a forged line over the real one and an escape
/// sequence cannot drive the terminal showing the log. Everything else is
/// left as it came (borrowed, the usual case, at no cost).
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            // `escape_debug` of a control character is `\r`, `\t`, `\n`
            // or `\u{..}`.
            let _ = write!(shown, "{}", c.escape_debug());
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

/// Warnings written at warn level in one second, at most, of those that
/// anyone who can connect may cause (a connection refused, an error
/// answered); the rest of that second's go to debug level.
pub const NETWORK_WARNINGS_PER_SECOND: u32 = 10;

/// The budget of [`network_warning`], for the whole process: reconnecting
/// does not renew it.
static NETWORK_WARNINGS: Mutex<WarningBudget> = Mutex::new(WarningBudget::new());

/// Logs a warning that anyone who can connect may cause as often as they
/// like: at warn level up to [`NETWORK_WARNINGS_PER_SECOND`] a second, the
/// rest at debug level. The next one written at warn level is preceded by
/// a line that says how many were held back, so a flood shows in the log
/// without filling it (its last second's count is told with the next
/// warning, whenever that comes).
pub fn network_warning(line: fmt::Arguments<'_>) {
    let verdict = NETWORK_WARNINGS.lock().judge(Instant::now());
    match verdict {
        Verdict::Write { held_before: 0 } => warn!("{line}"),
        Verdict::Write { held_before } => {
            warn!(
                "{} caused by connections went to the debug level only (over {NETWORK_WARNINGS_PER_SECOND} a second)",
                crate::units::count(held_before, "more warning")
            );
            warn!("{line}");
        }
        Verdict::Hold => debug!("{line}"),
    }
}

/// What the budget says of one warning.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// At warn level, after telling how many were held back before it.
    Write { held_before: u64 },
    /// At debug level: this second's budget is spent.
    Hold,
}

/// How many warnings were written in the current second, and how many
/// held back since the last one written. A pure count, given the time, so
/// that its test needs no clock.
#[derive(Debug)]
struct WarningBudget {
    /// When the current second began (at its first warning).
    second_began: Option<Instant>,
    /// Written at warn level in it.
    written: u32,
    /// Held back to debug level since the last one written.
    held: u64,
}

impl WarningBudget {
    const fn new() -> WarningBudget {
        WarningBudget {
            second_began: None,
            written: 0,
            held: 0,
        }
    }

    fn judge(&mut self, now: Instant) -> Verdict {
        let second_over = self
            .second_began
            .is_none_or(|began| now.saturating_duration_since(began) >= Duration::from_secs(1));
        if second_over {
            self.second_began = Some(now);
            self.written = 0;
        }
        if self.written < NETWORK_WARNINGS_PER_SECOND {
            self.written += 1;
            Verdict::Write {
                held_before: std::mem::take(&mut self.held),
            }
        } else {
            self.held += 1;
            Verdict::Hold
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_from_the_network_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("HELO 7001 alice"), Cow::Borrowed(_)));
        assert_eq!(
            printable("RQFS x\r2026 [WARN] FORGED\u{1b}[2J é\t"),
            "RQFS x\\r2026 [WARN] FORGED\\u{1b}[2J é\\t"
        );
    }

    #[test]
    fn a_flood_of_warnings_is_held_to_the_budget_and_counted() {
        let start = Instant::now();
        let mut budget = WarningBudget::new();
        for _ in 0..NETWORK_WARNINGS_PER_SECOND {
            assert_eq!(budget.judge(start), Verdict::Write { held_before: 0 });
        }
        // The rest of that second, however many, go to debug level.
        for n in 1..=500 {
            let now = start + Duration::from_millis(n);
            assert_eq!(budget.judge(now), Verdict::Hold);
        }
        // The next second's first one tells them; a new connection or
        // not, the count is the process's.
        let next = start + Duration::from_secs(1);
        assert_eq!(budget.judge(next), Verdict::Write { held_before: 500 });
        assert_eq!(budget.judge(next), Verdict::Write { held_before: 0 });
    }
}
