//! `tubelet bench conv` (being written).

use clap::Args as ClapArgs;
use tubelet::{Error, Result};

#[derive(ClapArgs, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    Err(Error::Config("tubelet bench conv is not written yet".into()))
}
