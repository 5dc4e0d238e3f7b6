//! `cox-node-agent`: a thin binary; the logic lives in the `node_agent` library.

use clap::Parser;

/// the node agent of Coxswain.
#[derive(Parser, Debug)]
#[command(name = "cox-node-agent", version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!(node_agent::NOT_YET)
}
