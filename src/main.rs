use clap::{ArgMatches, CommandFactory, FromArgMatches};

use grantdoctor::cli::{CaCommand, Cli, Command};
use grantdoctor::telemetry::{self, LogFormat};

fn main() -> std::process::ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        Err(e) => exit_naming_source(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Some(Command::Ca(CaCommand::Init(args))) => grantdoctor::app::ca_init(&args),
        Some(Command::Ca(CaCommand::Show(args))) => grantdoctor::app::ca_show(&args),
        Some(Command::Ca(CaCommand::Trust(args))) => grantdoctor::app::ca_trust(&args),
        Some(Command::Run(args)) => configured(*args, sub(&matches, "run")).and_then(run),
        Some(Command::CheckConfig(args)) => configured(*args, sub(&matches, "check-config"))
            .and_then(grantdoctor::app::check_config),
        Some(Command::Emulate(args)) => emulate(args),
        Some(Command::Explain(args)) => grantdoctor::app::explain(args),
        Some(Command::Logs(args)) => grantdoctor::app::logs(args),
        Some(Command::Demo) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(grantdoctor::demo::run())),
        None => configured(cli.run, &matches).and_then(run),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grantdoctor: {e:#}");
            let usage = e.downcast_ref::<grantdoctor::cli::UsageError>().is_some();
            std::process::ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn run(args: grantdoctor::cli::RunArgs) -> anyhow::Result<()> {
    telemetry::init(
        args.log_format.unwrap_or_else(LogFormat::detect),
        args.log_file.as_deref(),
    )?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(grantdoctor::app::run(args))
}

fn emulate(args: grantdoctor::cli::EmulateArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format.unwrap_or_else(LogFormat::detect), None)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(grantdoctor::app::emulate(args))
}

fn sub<'a>(matches: &'a ArgMatches, name: &str) -> &'a ArgMatches {
    matches.subcommand_matches(name).unwrap_or(matches)
}

/// The run arguments with the configuration file's values filled in below flags and env.
fn configured(
    mut args: grantdoctor::cli::RunArgs,
    matches: &ArgMatches,
) -> anyhow::Result<grantdoctor::cli::RunArgs> {
    if let Some((path, file)) = grantdoctor::config::load(args.config.as_deref())? {
        grantdoctor::config::merge(&mut args, matches, file, &path)?;
    }
    Ok(args)
}

/// Clap names the flag of a bad value but not where it came from; when the flag is absent from
/// the command line and its `GRANTDOCTOR_*` variable is set, say that the environment did it.
fn exit_naming_source(e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) && let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg)
    {
        let flag = arg.split_whitespace().next().unwrap_or_default();
        let var = format!(
            "GRANTDOCTOR_{}",
            flag.trim_start_matches("--")
                .replace('-', "_")
                .to_ascii_uppercase()
        );
        let on_command_line =
            std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
        // The value is not echoed: an environment variable may hold a credential.
        if !on_command_line && std::env::var_os(&var).is_some() {
            eprintln!("grantdoctor: {var} (environment): not a valid value for {flag}");
            std::process::exit(2);
        }
    }
    e.exit()
}
