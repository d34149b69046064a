//! `wgbpf completions SHELL` and `wgbpf manpage`: generated from the same
//! clap definitions as the command itself, so they never drift from it.

use anyhow::Result;
use clap::{Args, Command};
use clap_complete::Shell;

/// Print a shell completion script (e.g. `wgbpf completions bash >
/// /etc/bash_completion.d/wgbpf`).
#[derive(Args)]
pub struct CompletionsArgs {
    shell: Shell,
}

pub fn completions(a: CompletionsArgs, mut cmd: Command) -> Result<()> {
    clap_complete::generate(a.shell, &mut cmd, "wgbpf", &mut std::io::stdout());
    Ok(())
}

/// Print the man page (roff), e.g. `wgbpf manpage > /usr/share/man/man8/wgbpf.8`.
#[derive(Args)]
pub struct ManpageArgs {}

pub fn manpage(_: ManpageArgs, cmd: Command) -> Result<()> {
    let cmd = cmd.name("wgbpf");
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .render(&mut std::io::stdout())?;
    // One section per subcommand, as `wgbpf-SUB(8)` would be.
    for sub in cmd.get_subcommands() {
        // clap wants a 'static name here; the process prints and exits.
        let name: &'static str = format!("wgbpf-{}", sub.get_name()).leak();
        clap_mangen::Man::new(sub.clone().name(name))
            .section("8")
            .render(&mut std::io::stdout())?;
    }
    Ok(())
}
