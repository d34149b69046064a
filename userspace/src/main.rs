//! The `wgbpf` command.

mod cli;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wgbpf",
    version,
    about = "eBPF access control for WireGuard gateways",
    long_about = "wgbpf enforces per-peer and per-port ACLs on a WireGuard interface with eBPF \
                  programs pinned in the kernel, and counts what they deny. Enforcement \
                  outlives this command: `load` installs or updates it, `unload` removes it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Load(cli::load::LoadArgs),
    Unload(cli::unload::UnloadArgs),
    Counters(cli::counters::CountersArgs),
    Show(cli::show::ShowArgs),
    Monitor(cli::monitor::MonitorArgs),
    Audit(cli::audit::AuditArgs),
    Doctor(cli::doctor::DoctorArgs),
    /// Check a policy (tests, broad and dead rules), explain a verdict, see who
    /// reaches whom, diff two files (no kernel needed).
    Policy(cli::policy::PolicyArgs),
    /// Bring in wg-quick files, Tailscale ACL files or Netbird policies.
    Import(cli::import::ImportArgs),
    /// Write a peer's own WireGuard configuration from the mesh file.
    Export(cli::export::ExportArgs),
    Run(cli::run::RunArgs),
    Push(cli::push::PushArgs),
    /// A fleet of gateways from etcd: what each enforces (docs/fleet.md).
    Fleet(cli::fleet::FleetArgs),
    Reload(cli::reload::ReloadArgs),
    /// Key management: rotate a peer's key with a transition window.
    Keys(cli::keys::KeysArgs),
    /// Generate a private key (base64), like `wg genkey`.
    Genkey(cli::genkey::GenkeyArgs),
    /// Print the public key of the private key on stdin, like `wg pubkey`.
    Pubkey(cli::genkey::PubkeyArgs),
    /// Generate a preshared key (base64), like `wg genpsk`.
    Genpsk(cli::genkey::GenpskArgs),
    Completions(cli::docs::CompletionsArgs),
    Manpage(cli::docs::ManpageArgs),
}

fn main() {
    let result = match Cli::parse().command {
        Command::Load(a) => cli::load::run(a),
        Command::Unload(a) => cli::unload::run(a),
        Command::Counters(a) => cli::counters::run(a),
        Command::Show(a) => cli::show::run(a),
        Command::Monitor(a) => cli::monitor::run(a),
        Command::Audit(a) => cli::audit::run(a),
        Command::Doctor(a) => cli::doctor::run(a),
        Command::Policy(a) => cli::policy::run(a),
        Command::Import(a) => cli::import::run(a),
        Command::Export(a) => cli::export::run(a),
        Command::Run(a) => cli::run::run(a),
        Command::Push(a) => cli::push::run(a),
        Command::Fleet(a) => cli::fleet::run(a),
        Command::Reload(a) => cli::reload::run(a),
        Command::Keys(a) => cli::keys::run(a),
        Command::Genkey(a) => cli::genkey::genkey(a),
        Command::Pubkey(a) => cli::genkey::pubkey(a),
        Command::Genpsk(a) => cli::genkey::genpsk(a),
        Command::Completions(a) => cli::docs::completions(a, Cli::command()),
        Command::Manpage(a) => cli::docs::manpage(a, Cli::command()),
    };
    if let Err(e) = result {
        let message = format!("{e:#}");
        // A script that asked for JSON gets its failure as JSON too.
        if std::env::args_os().any(|a| a == "--json") {
            println!("{}", serde_json::json!({"ok": false, "error": message}));
        }
        eprintln!("wgbpf: error: {message}");
        std::process::exit(1);
    }
}
