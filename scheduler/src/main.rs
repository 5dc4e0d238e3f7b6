//! `cox-scheduler`: a thin binary; the logic lives in the `scheduler` library.

use clap::Parser;

/// the scheduler of Coxswain.
#[derive(Parser, Debug)]
#[command(name = "cox-scheduler", version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!(scheduler::NOT_YET)
}
