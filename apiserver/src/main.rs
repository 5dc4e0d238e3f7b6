//! `cox-apiserver`: a thin binary; the logic lives in the `apiserver` library.

use clap::Parser;

/// the API server of Coxswain.
#[derive(Parser, Debug)]
#[command(name = "cox-apiserver", version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!(apiserver::NOT_YET)
}
