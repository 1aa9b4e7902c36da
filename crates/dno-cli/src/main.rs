//! `dno`: Direct Nash Optimization (Rosset et al. 2024, arXiv 2404.03715) as separate,
//! inspectable, restartable stages that read and write Parquet.

mod cmd;
mod config;
mod logging;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "dno", version, about = "Direct Nash Optimization for LLMs: sample -> annotate -> pair -> train -> eval", long_about = None)]
struct Cli {
    /// TOML file whose keys mirror the flags, one table per subcommand ([sample], [pair], [prompts.import]).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// More logging (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stage 1: K on-policy samples per prompt (burn, or an OpenAI-compatible server).
    Sample(cmd::sample::Args),
    /// Stage 2: preferences P(a > b | x) from an oracle (LLM judge, verifier, command).
    Annotate(cmd::annotate::Args),
    /// Stage 3: training pairs from preferences (dno-prct, max-min, soft).
    Pair(cmd::pair::Args),
    /// Stage 4: contrastive training against the previous iterate (dno, dpo, ipo, sppo, sft).
    Train(cmd::train::Args),
    /// Stage 5: win-rate against a fixed baseline, with CI and a length-controlled figure.
    Eval(cmd::eval::Args),
    /// Join a stage's `--shard I/N` outputs into one file, as the unsharded run writes it.
    Merge(cmd::merge::Args),
    /// Per-iteration report (markdown table + SVG plot) from a run directory's eval files.
    Report(cmd::report::Args),
    /// Work with prompt files (import JSONL, JSON, CSV, Parquet; chat conversations).
    #[command(subcommand)]
    Prompts(cmd::prompts::Command),
    /// Bring your own samples (responses made outside dno) for annotate, pair and eval.
    #[command(subcommand)]
    Samples(cmd::samples::Command),
    /// Bring your own preference pairs (prompt/chosen/rejected) for dno train.
    #[command(subcommand)]
    Pairs(cmd::pairs::Command),
    /// Print a Parquet file's schema, provenance, row count and first rows.
    Inspect(cmd::inspect::Args),
    /// Validate dataset files (schema, nulls, ranges, duplicate keys) without running a stage.
    Validate(cmd::validate::Args),
    /// Print a dataset schema (prompts, samples, preferences, pairs, eval, metrics).
    Schema(cmd::schema::Args),
    /// The built-in quickstart task (a tiny policy and an arithmetic task with verifiable answers).
    #[command(subcommand)]
    Demo(cmd::demo::Command),
    /// Export a model (GGUF or HF directory) as an HF directory.
    Export(cmd::export::Args),
}

fn main() {
    let argv = match config::expand_args(std::env::args_os().collect(), Cli::command()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(cmd::EXIT_USAGE);
        }
    };
    let cli = Cli::parse_from(argv);
    logging::init(cli.verbose, cli.quiet);
    // Printing commands behave like other Unix tools when piped into `head`: exit quietly on a
    // closed pipe. Stages keep SIGPIPE ignored, so a command oracle that closes its stdin is an
    // error they report rather than a silent death.
    #[cfg(unix)]
    if matches!(cli.command, Command::Inspect(_) | Command::Schema(_) | Command::Report(_) | Command::Validate(_)) {
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Sample(a) => cmd::sample::run(a),
        Command::Annotate(a) => cmd::annotate::run(a),
        Command::Pair(a) => cmd::pair::run(a),
        Command::Train(a) => {
            dno_model::device::one_malloc_arena();
            cmd::train::run(a)
        }
        Command::Eval(a) => cmd::eval::run(a),
        Command::Merge(a) => cmd::merge::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Prompts(c) => cmd::prompts::run(c),
        Command::Samples(c) => cmd::samples::run(c),
        Command::Pairs(c) => cmd::pairs::run(c),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Schema(a) => cmd::schema::run(a),
        Command::Validate(a) => cmd::validate::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Demo(c) => cmd::demo::run(c),
    };
    if let Err(e) = result {
        // One line: the chain of contexts joined by ": ".
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(cmd::exit_code(&e));
    }
}
