//! `cox-controller-manager`: a thin binary; the logic lives in the `controller_manager` library.

use clap::Parser;

/// the controller manager of Coxswain.
#[derive(Parser, Debug)]
#[command(name = "cox-controller-manager", version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!(controller_manager::NOT_YET)
}
