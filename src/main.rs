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
        Some(Command::CheckConfig(args)) => check_config(*args, sub(&matches, "check-config")),
        Some(Command::Emulate(args)) => emulate(args),
        Some(Command::Explain(args)) => grantdoctor::app::explain(args),
        Some(Command::Logs(args)) => grantdoctor::app::logs(args),
        Some(Command::Demo) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(grantdoctor::demo::run())),
        Some(Command::Completions(args)) => {
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "grantdoctor", &mut script);
            grantdoctor::app::to_stdout(&script)
        }
        Some(Command::Man) => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .map_err(anyhow::Error::from)
                .and_then(|()| grantdoctor::app::to_stdout(&page))
        }
        Some(Command::Doctor(args)) => {
            let json = args.json;
            configured(args.run, sub(&matches, "doctor")).and_then(|run| doctor(run, json))
        }
        None => configured(cli.run, &matches).and_then(run),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grantdoctor: {}", report(&e));
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

fn doctor(args: grantdoctor::cli::RunArgs, json: bool) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(grantdoctor::app::doctor(args, json))
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
    grantdoctor::config::apply_env_fallbacks(&mut args, matches)?;
    if let Some(loaded) = grantdoctor::config::load(args.config.as_deref())? {
        grantdoctor::config::merge(&mut args, matches, loaded.file, &loaded.path)?;
    }
    Ok(args)
}

/// `check-config`: the same merge as `run`, remembering where each value came from.
fn check_config(mut args: grantdoctor::cli::RunArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    grantdoctor::config::apply_env_fallbacks(&mut args, matches)?;
    let mut loaded = grantdoctor::config::load(args.config.as_deref())?;
    if let Some(loaded) = loaded.as_mut() {
        let file = std::mem::take(&mut loaded.file);
        grantdoctor::config::merge(&mut args, matches, file, &loaded.path)?;
    }
    let provenance = grantdoctor::config::provenance(matches, loaded.as_ref());
    grantdoctor::app::check_config(args, &provenance)
}

/// The error and its causes, each once. Errors that put their source in their own message
/// (`path: Permission denied (os error 13)` over the io::Error itself) would otherwise print
/// the source twice in anyhow's `{:#}` chain.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
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
