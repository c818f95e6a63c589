//! `dupcheck export`: not built yet.

use clap::Args as ClapArgs;

use crate::common::Outcome;

/// Not built yet
#[derive(ClapArgs, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Outcome {
    Outcome::Failed(dupcheck::Error::usage("dupcheck export is not built yet"))
}
