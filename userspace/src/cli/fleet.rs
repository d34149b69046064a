//! `wgbpf fleet status`: every gateway of the fleet, the revision it
//! enforces, its last refusal, how long since it reported.

use anyhow::Result;
use clap::{Args, Subcommand};
use wgbpf::fleet::report;

use super::store::StoreArgs;

#[derive(Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    command: FleetCommand,
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Every gateway, in the fleet or reporting: the revision it enforces,
    /// the last revision it refused and why, seconds since it reported.
    /// A gateway whose daemon is gone has no report (its lease expired
    /// within 15 s). Exits 1 when a gateway of the fleet is not enforcing
    /// the fleet's revision (behind, refusing or silent).
    Status {
        /// etcd endpoints, comma-separated.
        #[arg(long, value_name = "ENDPOINTS")]
        etcd: String,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(a: FleetArgs) -> Result<()> {
    match a.command {
        FleetCommand::Status { etcd, store, json } => status(&etcd, &store, json),
    }
}

fn status(etcd: &str, store: &StoreArgs, json: bool) -> Result<()> {
    let layout = store.layout()?;
    let connection = store.connection(etcd)?;
    let st = super::store::runtime()?.block_on(async {
        let mut client = connection.connect().await?;
        anyhow::Ok(report::status(&mut client, &layout).await?)
    })?;
    let behind: Vec<&str> = st
        .gateways
        .iter()
        .filter(|g| g.in_fleet)
        .filter(|g| {
            g.report
                .as_ref()
                .is_none_or(|r| r.revision != Some(st.revision))
        })
        .map(|g| g.gateway.as_str())
        .collect();
    if json {
        let mut v = serde_json::to_value(&st)?;
        v["ok"] = behind.is_empty().into();
        v["behind"] = serde_json::json!(behind);
        println!("{v}");
        if !behind.is_empty() {
            // The object says it all; no second one from main().
            std::process::exit(1);
        }
    } else {
        match &st.unreadable_revision {
            Some(why) => println!("fleet revision unknown: {why}"),
            None => println!("fleet revision {}", st.revision),
        }
        println!(
            "{:<20} {:>8} {:>9}  LAST ERROR",
            "GATEWAY", "ENFORCES", "REPORTED"
        );
        for g in &st.gateways {
            let (enforces, age, err) = match &g.report {
                None if g.unreadable_report.is_some() => (
                    "-".to_string(),
                    "?".to_string(),
                    g.unreadable_report.clone().unwrap_or_default(),
                ),
                None => (
                    "-".to_string(),
                    "never".to_string(),
                    "no report (down?)".to_string(),
                ),
                Some(r) => (
                    r.revision.map_or("-".into(), |v| v.to_string()),
                    format!("{}s ago", g.seconds_since_report.unwrap_or(0)),
                    r.refused.as_ref().map_or(String::new(), |f| {
                        format!(
                            "refused revision {}: {}",
                            f.revision,
                            f.error.replace('\n', " | ")
                        )
                    }),
                ),
            };
            let name = if g.in_fleet {
                g.gateway.clone()
            } else {
                format!("{} (not in fleet)", g.gateway)
            };
            println!("{name:<20} {enforces:>8} {age:>9}  {err}");
        }
    }
    if !behind.is_empty() {
        anyhow::bail!(
            "not enforcing revision {}: {}",
            st.revision,
            behind.join(", ")
        );
    }
    Ok(())
}
