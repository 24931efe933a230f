//! `timctl`: keeps Tencent Cloud Chat conversations deleted, declaratively.
//!
//! This binary only parses arguments, calls an operation of `timctl-core` and prints what it
//! returns. See ARCHITECTURE.md for where the logic lives.

use std::process::ExitCode;

mod args;
mod client;
mod cmd;
mod credentials;
mod help;
mod listing;
mod origin;
mod output;
mod progress;
mod redact;
mod signals;

use args::Command;

fn main() -> ExitCode {
    let cli = match args::parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Usage errors exit 1, never clap's 2: under `plan --detailed-exitcode` a 2 means
            // "there are changes", and a typo must not read as that.
            let code = if err.use_stderr() { 1 } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    let json_logs =
        matches!(&cli.command, Command::Serve(a) if a.log_format == cmd::serve::LogFormat::Json);
    cli.global.init_output_as(json_logs);
    redact::remember_state(cli.global.state.as_os_str());
    let result = match &cli.command {
        Command::Validate(a) => cmd::validate::run(&cli.global, a),
        Command::Fmt(a) => cmd::fmt::run(&cli.global, a),
        Command::Plan(a) => cmd::plan::run(&cli.global, a),
        Command::Show(a) => cmd::show::run(&cli.global, a),
        Command::Apply(a) => cmd::apply::run(&cli.global, a),
        Command::Serve(a) => cmd::serve::run(&cli.global, a),
        Command::Schema(a) => cmd::schema::run(&cli.global, a),
        Command::State(a) => cmd::state::run(&cli.global, a),
        Command::Usersig(a) => cmd::usersig::run(&cli.global, a),
        Command::Completions(a) => cmd::completions::run(a),
        Command::Man(a) => cmd::man::run(a),
    };
    match result {
        Ok(code) => code,
        // The reader of stdout went away (`timctl plan | head`): not an error.
        Err(report) if output::is_closed_stdout(&report) => ExitCode::SUCCESS,
        Err(report) => {
            // Bad manifests read like rustc's errors; only when they are the whole report, not
            // the cause under a command's own message (`usersig` without `--sdkappid`).
            match report.downcast_ref::<timctl_core::manifest::ManifestErrors>() {
                Some(errors) if errors.to_string() == report.to_string() => {
                    output::print_problems(errors, "load")
                }
                // Whatever the error quotes, it is printed without the run's secrets.
                _ => output::status_line(
                    json_logs,
                    "ERROR",
                    redact::text(&format!("{report:?}")).trim_end(),
                ),
            }
            ExitCode::from(1)
        }
    }
}
