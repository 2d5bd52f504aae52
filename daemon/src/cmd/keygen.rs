//! `lanseed keygen`: a new publisher key pair.

use lanseed_protocol::SecretKey;

use crate::cli::KeygenArgs;

pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let key = SecretKey::generate()?;
    let pub_path = key.write(&args.out, args.force)?;
    eprintln!(
        "Secret key written to {} (keep it private). Public key written to {}; add this line to the trust file of your devices:",
        args.out.display(),
        pub_path.display()
    );
    println!("{}", key.public());
    Ok(())
}
