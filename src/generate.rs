//! `imgstream man` and `imgstream completions`: documentation generated from the clap
//! definitions, so that the man pages and shell completions never drift from `--help`.

use crate::Failure;
use crate::cli::{Cli, CompletionsArgs, ManArgs};
use clap::CommandFactory;
use std::io::Write;

/// Writes `imgstream.1` and one `imgstream-SUBCOMMAND.1` page per subcommand into the directory.
pub(crate) fn man(args: &ManArgs) -> Result<(), Failure> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| Failure::new(format!("cannot create {}: {e}", args.dir.display())))?;
    clap_mangen::generate_to(Cli::command(), &args.dir)
        .map_err(|e| Failure::new(format!("cannot write man pages to {}: {e}", args.dir.display())))
}

/// Prints the completion script for a shell on stdout.
pub(crate) fn completions(args: &CompletionsArgs) -> Result<(), Failure> {
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    // Into memory first: clap_complete panics on a write error, and stdout may be a closed pipe.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    std::io::stdout().write_all(&script).map_err(|e| Failure::new(format!("cannot write to stdout: {e}")))
}
