//! `lanseed demo`: the whole story on loopback (see [`crate::demo`]).

use crate::cli::DemoArgs;
use crate::demo::{self, DemoOptions};

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    demo::run(DemoOptions {
        dir: args.dir,
        json: args.json,
        keep: args.keep,
        confirm_with: args.confirm_with,
    })?;
    Ok(())
}
