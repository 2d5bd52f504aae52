//! `lanseed-liar`: a lanseed peer that lies on command, for multi-node
//! security tests. See [`lanseed_tests::liar`] for what it does; `--help`
//! for how.

use clap::Parser as _;

fn main() {
    let args = lanseed_tests::liar::Args::parse();
    if let Err(e) = lanseed_tests::liar::run(args) {
        eprintln!("lanseed-liar: {e:#}");
        std::process::exit(1);
    }
}
