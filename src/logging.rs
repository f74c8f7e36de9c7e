//! Logging for the programs: to the terminal (standard error, so standard
//! output stays free for `listening on ...`) and to a log file, each line
//! with a UTC timestamp, the level and the name of the thread that wrote it.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;

use log::LevelFilter;
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
