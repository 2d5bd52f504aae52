//! `lanseed keygen`: a new publisher key pair.

use lanseed_protocol::SecretKey;

use crate::cli::KeygenArgs;

pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    if args.fleet {
        return fleet(&args);
    }
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

/// A fleet key in the libp2p `swarm.key` format, mode 0600.
fn fleet(args: &KeygenArgs) -> anyhow::Result<()> {
    write_fleet_key(&args.out, args.force)?;
    eprintln!(
        "Fleet key written to {}; give it to every node of the fleet (`lanseed seed --fleet-key {}`).",
        args.out.display(),
        args.out.display()
    );
    Ok(())
}

/// Writes a new random fleet key to `out` (mode 0600); an existing file is
/// replaced only with `force`.
pub(crate) fn write_fleet_key(out: &std::path::Path, force: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| anyhow::anyhow!("the system random source failed: {e}"))?;
    let text = format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", hex::encode(key));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(out).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
            "{} already exists; pass --force to overwrite it",
            out.display()
        ),
        _ => anyhow::anyhow!("cannot write {}: {e}", out.display()),
    })?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
