//! The command line: every subcommand, its flags and their help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use lanseed_protocol::release::{DEFAULT_CHANNEL, Rollout};

/// Peer-to-peer, LAN-first distribution of signed web-app bundles.
///
/// Publish a web build (Capacitor's webDir, a kiosk's web app) once; devices
/// on the same network fetch it from each other, verify every byte and the
/// publisher's signature, and install it with automatic rollback.
#[derive(Debug, Parser)]
#[command(name = "lanseed", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// The config file (default: /etc/lanseed/lanseed.toml as root, else
    /// lanseed/lanseed.toml in your config folder, when it exists). One
    /// table per command ([seed], [device], …) and [node] for the flags
    /// seed and device share; a flag or LANSEED_<FLAG> wins over the file.
    #[arg(long, global = true, value_name = "FILE", env = "LANSEED_CONFIG")]
    pub config: Option<PathBuf>,
    /// Read no config file (also LANSEED_NO_CONFIG=1).
    #[arg(long, global = true, env = "LANSEED_NO_CONFIG", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_config: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; its size does not matter
pub enum Command {
    /// Make a new Ed25519 publisher key pair.
    ///
    /// Writes the secret key to FILE (mode 0600) and the public key line to
    /// FILE.pub, and prints the public key. Put that line in the trust file
    /// (--trust) of every device that should accept your releases.
    Keygen(KeygenArgs),
    /// Build a bundle from a web build folder and sign a release of it.
    ///
    /// Hashes every file, stores each once (files shared with earlier
    /// bundles are not stored again), and adds a release signed with your
    /// key to the store. The folder must have index.html at its root.
    Pack(PackArgs),
    /// Add Capgo encryption v2 to a release already packed.
    ///
    /// For apps whose @capgo/capacitor-updater has a Capgo public key
    /// configured: the plugin then takes only encrypted updates. Encrypts
    /// the release's bundle (its deterministic zip) with the Capgo private
    /// key, as `@capgo/cli bundle encrypt` does, and signs a new release
    /// statement (same bundle and settings, a higher sequence number) that
    /// carries the session key, the encrypted checksum, the key id and the
    /// encrypted zip. Seeders and the gateway serve these; the private key
    /// stays on this machine. Only the newest release of its channel can
    /// be re-signed. `lanseed pack --capgo-key` does the same at pack time.
    CapgoEncrypt(CapgoEncryptArgs),
    /// List the releases a store holds.
    Releases(ReleasesArgs),
    /// Write one release, its manifest and its files to one file.
    ///
    /// The release file carries a release into an offline site (a USB
    /// stick); `lanseed import` there verifies it all before using it. With
    /// --zip, writes the bundle instead as a plain deterministic zip (the
    /// same bundle always gives the same bytes) and prints its SHA-256.
    Export(ExportArgs),
    /// Read a release file made by `lanseed export` into a store.
    ///
    /// The signature is checked against the trust file and every file
    /// against its hash before anything is added; an unsigned, tampered,
    /// truncated or untrusted file changes nothing.
    Import(ImportArgs),
    /// Write a store's releases as a static tree for any web server.
    ///
    /// index.json lists every release; signed records, manifests and blobs
    /// (gzip-compressed where that helps) are files named by their hash, so
    /// publishing again only adds what is new.
    PublishStatic(PublishStaticArgs),
    /// Check or clean a store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Run a node: find peers, serve the store's releases, fetch followed ones.
    ///
    /// Advertises itself over mDNS (`_lanseed._udp.local.`), announces every
    /// release in its store to the peers it connects to (and new ones as
    /// they appear), and serves their files. With --follow it fetches newer
    /// releases of those apps and channels from peers, verified against
    /// --trust, and seeds them on: a site cache. Runs until SIGINT or
    /// SIGTERM, then stops cleanly.
    Seed(SeedArgs),
    /// Show what a running node knows: peers, releases, transfers.
    Status(StatusArgs),
    /// The device agent: a node plus the updater, serving the active bundle.
    ///
    /// Fetches and seeds releases of --app like `seed`, installs those of
    /// its channel with Capgo's rules (trial, notifyAppReady within
    /// --app-ready-timeout, rollback to the last good bundle or --builtin),
    /// and serves the active bundle on --serve for a WebView or kiosk
    /// browser, with /__lanseed/client.js. With a subcommand, talks to the
    /// agent running on --store instead.
    Device(DeviceArgs),
    /// The dev loop: publish a build folder on channel `dev` at every save.
    ///
    /// Watches DIR (or the `webDir` of capacitor.config.json / .ts, in this
    /// folder or above), and each time your bundler finishes writing it
    /// (the folder is quiet and has index.html) packs what changed, signs it
    /// with your dev key and publishes it on `dev` as a node. Test devices
    /// running `lanseed device --channel dev --apply immediate` fetch only
    /// the changed files and reload; their reports are printed as they
    /// arrive. Ctrl-C stops it.
    Dev(DevArgs),
    /// The whole story on loopback: a seeder, three devices, three releases.
    ///
    /// Makes a key, packs the example app, starts one seeder and three
    /// device agents as real nodes on 127.0.0.1 (mDNS on the loopback
    /// interface only, or --peer where it has no multicast), publishes v1
    /// (installed and confirmed everywhere), a broken v2 (rolled back
    /// everywhere) and v3, and prints per step the time to reach every
    /// device, the bytes moved and who served whom. Pages are confirmed by
    /// headless Chromium where installed, else by a built-in page driver.
    /// Runs in a temporary folder and stops everything it started.
    Demo(DemoArgs),
    /// Every device the node running on --store has heard of.
    ///
    /// Lanseed devices' reports and the Capgo gateway's stats: device id,
    /// app, channel, version, status, last event, last seen, where the row
    /// came from and whether the fleet key admitted it (only those count
    /// for rollouts). A lanseed device that missed three reports (every
    /// 30 s) is marked stale; it stays listed.
    Fleet(StatusArgs),
    /// Change who gets a channel's release, or go back to an older one.
    ///
    /// Signs a new release statement with your key, with a higher sequence
    /// number, into --store; a node running on that store announces it.
    /// --percent P: the channel's current bundle with another share of
    /// devices (SPEC's draw on the device id, so raising P only adds
    /// devices; 0 pauses; devices already on the bundle stay on it and do
    /// not reinstall or reload). --back-to VERSION: the channel points at
    /// that older bundle again, for every device (Capgo's channel
    /// rollback; devices take it as a new release, no downgrade needed).
    ///
    /// --waves 5,25,50,100: a staged rollout that stays running. Each wave
    /// raises the share; it advances when at least 90 % of the devices its
    /// draw selects (among authenticated devices of the app and channel
    /// seen in the last hour, as the node running on --store knows them:
    /// the fleet must run with --fleet-key) have confirmed the new bundle
    /// (notifyAppReady) or failed it, and --dwell has passed. As soon as the 95 % Wilson lower bound of the
    /// failure rate exceeds --max-failure-rate it halts: the share goes to
    /// 0 (with --on-halt back-to, the channel goes back to the previous
    /// bundle too) and it exits non-zero. Its progress is kept in the store
    /// (rollouts/), so running the same command again resumes the wave.
    Rollout(RolloutArgs),
    /// The config file: check it and show the settings it gives.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Channel settings kept in the store: public, self-assignable, Capgo
    /// manifest mode (read by the gateway of a node started with --http).
    #[command(subcommand)]
    Channel(ChannelCommand),
}

/// `lanseed rollout`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).args(["percent", "back_to", "waves"])))]
pub struct RolloutArgs {
    /// App id.
    pub app: String,
    /// Channel.
    pub channel: String,
    /// The share of devices for the channel's current bundle, in percent
    /// (e.g. 25 or 2.5; 0 pauses the rollout).
    #[arg(long, value_name = "PERCENT")]
    pub percent: Option<Rollout>,
    /// Go back to this version's bundle (it must be in the store).
    #[arg(long, value_name = "VERSION")]
    pub back_to: Option<String>,
    /// Roll the channel's current bundle out in waves: rising shares in
    /// percent, e.g. 5,25,50,100. Pack the release with --rollout 0 (or
    /// at most the first wave's share) so that it waits for the first wave.
    #[arg(long, value_name = "P,P,...", value_delimiter = ',')]
    pub waves: Option<Vec<Rollout>>,
    /// Least time each wave lasts (with --waves).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration, requires = "waves")]
    pub dwell: std::time::Duration,
    /// Halt when the failure rate's 95 % lower bound exceeds this (with
    /// --waves), in percent.
    #[arg(long, value_name = "PERCENT", default_value = "2%", requires = "waves")]
    pub max_failure_rate: Rollout,
    /// What a halt does besides setting the share to 0 (with --waves):
    /// `pause`, or `back-to` (publish a rollback to the bundle the channel
    /// had before).
    #[arg(long, value_enum, default_value_t = OnHalt::Pause, requires = "waves")]
    pub on_halt: OnHalt,
    /// Count the Capgo gateway's stats (update_fail, checksum_fail,
    /// download_fail) for the gate too (with --waves). They are plain HTTP
    /// that any host on the LAN can post: this trusts the LAN.
    #[arg(long, requires = "waves")]
    pub count_gateway_stats: bool,
    /// Secret key file made by `lanseed keygen` (the publisher's).
    #[arg(long, value_name = "FILE", env = "LANSEED_KEY")]
    pub key: PathBuf,
    #[command(flatten)]
    pub store: StoreArg,
    /// Print the new release as JSON (with --percent or --back-to).
    #[arg(long, conflicts_with = "waves")]
    pub json: bool,
}

/// What a halted rollout does besides pausing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnHalt {
    /// Set the share to 0 only.
    Pause,
    /// Also go back to the bundle the channel had before, for every device.
    BackTo,
}

/// `lanseed config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the config file and print the effective settings.
    ///
    /// Reads the file (--config, else the default location), checks every
    /// table, key and value against the commands' flags, and prints what
    /// `seed`, `device` and `dev` would run with: each flag's value and
    /// where it comes from (the file and line, LANSEED_<FLAG>, or the
    /// default). An unknown key or a bad value is an error naming the
    /// file, line and key.
    Check,
}

/// `lanseed dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// The build folder to watch (default: `webDir` of the Capacitor config).
    pub dir: Option<PathBuf>,
    /// App id (default: `appId` of the Capacitor config).
    #[arg(long)]
    pub app: Option<String>,
    /// The dev store (default: lanseed/dev/APP under your data folder;
    /// never the default store, so it does not collide with `seed`).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The dev signing key (default: lanseed/dev.key under your config
    /// folder, made on first use). Never use a production key here.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Dev releases kept in the store.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: u32,
    /// How long the folder must be quiet before a pack.
    #[arg(long, value_name = "DURATION", default_value = "40ms", value_parser = humantime::parse_duration)]
    pub quiet: std::time::Duration,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// `lanseed demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run in DIR (created; must be empty) and keep it: stores, logs,
    /// keys, release files [default: a temporary folder, removed at the
    /// end].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Leave the devices serving after the report and print their URLs,
    /// until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// Who loads the pages and lets them confirm: headless Chromium where
    /// installed (auto), Chromium only, or the built-in page driver.
    #[arg(long, value_name = "WHO", value_enum, default_value = "auto")]
    pub confirm_with: crate::demo::ConfirmWith,
}

/// Where the store is.
#[derive(Debug, Args)]
pub struct StoreArg {
    /// The store directory [default: lanseed/store under your data
    /// directory, e.g. ~/.local/share/lanseed/store].
    #[arg(long, value_name = "DIR", env = "LANSEED_STORE")]
    pub store: Option<PathBuf>,
}

/// `lanseed keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Secret key file to write; the public key goes to FILE.pub.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Overwrite FILE and FILE.pub if they exist.
    #[arg(long)]
    pub force: bool,
    /// Make a fleet key (a pre-shared key for `seed --fleet-key`) instead
    /// of a publisher key pair: only nodes holding it can connect.
    #[arg(long)]
    pub fleet: bool,
}

/// `lanseed seed`.
#[derive(Debug, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// Fetch and seed releases of APP (all channels, or just CHANNEL).
    #[arg(long, value_name = "APP[:CHANNEL]")]
    pub follow: Vec<String>,
    /// Trust file: only releases signed by these keys are fetched.
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    #[command(flatten)]
    pub origin: OriginArgs,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// A site cache's origin (`seed --origin`).
#[derive(Debug, Args)]
pub struct OriginArgs {
    /// Also pull the followed releases from this static origin (a
    /// `lanseed publish-static` tree on a web server, http or https):
    /// only the blobs the store lacks, each verified before it is stored.
    #[arg(long, value_name = "URL", requires_all = ["follow", "trust"])]
    pub origin: Option<String>,
    /// Time between polls of the origin's index.json (longer while its
    /// Cache-Control says it is fresh, at most an hour).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration, requires = "origin")]
    pub origin_every: std::time::Duration,
    /// A header sent with every request to the origin, e.g.
    /// 'Authorization: Bearer TOKEN' (repeatable).
    #[arg(long, value_name = "NAME: VALUE", requires = "origin")]
    pub origin_header: Vec<String>,
    /// Cap on what is downloaded from the origin: e.g. 500K, 2M (bytes per
    /// second) or 8mbit. Unlimited by default.
    #[arg(long, value_name = "RATE", value_parser = crate::node::limit::parse_rate, requires = "origin")]
    pub origin_rate: Option<u64>,
}

/// How a node talks to the network (`seed` and `device`).
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Address to listen on (repeatable).
    #[arg(long, value_name = "MULTIADDR", default_value = "/ip4/0.0.0.0/tcp/0")]
    pub listen: Vec<String>,
    /// A peer to connect to, for networks that drop multicast (repeatable),
    /// e.g. /ip4/10.0.0.5/tcp/4001/p2p/12D3Koo…
    #[arg(long, value_name = "MULTIADDR")]
    pub peer: Vec<String>,
    /// Fleet key file (`lanseed keygen --fleet`): only nodes with it connect.
    #[arg(long, value_name = "FILE")]
    pub fleet_key: Option<PathBuf>,
    /// Do not use mDNS (find peers only through --peer and inbound).
    #[arg(long)]
    pub no_mdns: bool,
    /// Use mDNS on this network interface only.
    #[arg(long, value_name = "NAME", conflicts_with = "no_mdns")]
    pub mdns_interface: Option<String>,
    /// How long a peer may take to answer one request before it is dropped
    /// from the transfer.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,
    /// Cap on what this node uploads to peers, all together: e.g. 500K, 2M,
    /// 1.5MiB (bytes per second) or 20mbit. Counts what lanseed sends;
    /// TCP/IP headers add a few percent on the wire. Unlimited by default.
    #[arg(long, value_name = "RATE", value_parser = crate::node::limit::parse_rate)]
    pub upload_limit: Option<u64>,
    /// Most peers served at once; others are told to ask elsewhere or
    /// come back shortly.
    #[arg(long, value_name = "N", default_value_t = crate::node::uploads::DEFAULT_MAX as u32, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub max_uploads: u32,
    /// Let the members of GROUP (a name or a gid) use this node's control
    /// sockets (`lanseed status`, `lanseed device list`...) too; by
    /// default only the node's own user and root may.
    #[arg(long, value_name = "GROUP")]
    pub control_group: Option<String>,
    /// Apply the per-address connection limits (8 connecting, 8 open per
    /// IP address) to loopback too. By default loopback is exempt, so that
    /// several nodes on one machine connect freely.
    #[arg(long)]
    pub limit_loopback: bool,
    /// Free space to leave on the store's file system: a size (500M, 2G),
    /// a share (5%), or `auto` (the smaller of 5% and 500 MB). Below it,
    /// fetches wait and `lanseed status` says why; 0 turns it off.
    #[arg(long, value_name = "SIZE|PERCENT", default_value = "auto")]
    pub min_free: crate::node::space::MinFree,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// The Capgo-compatible HTTP gateway of a node.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Answer @capgo/capacitor-updater on this address (e.g.
    /// 192.168.1.10:8080): POST /updates, POST /stats, /channel_self, and
    /// the bundle downloads. Off by default: the operator chooses what the
    /// LAN sees.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// Serve the gateway over HTTPS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["http", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires_all = ["http", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
}

/// `lanseed channel`.
#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Set a channel's settings (flags not given are turned off).
    Set(ChannelSetArgs),
    /// List the channel settings of a store.
    List(ChannelListArgs),
}

/// `lanseed channel set`.
#[derive(Debug, Args)]
pub struct ChannelSetArgs {
    /// The app id.
    pub app: String,
    /// The channel name.
    pub name: String,
    /// List the channel to devices (Capgo's `public`); a device asking
    /// for it is put back on its default channel.
    #[arg(long)]
    pub public: bool,
    /// Let devices switch themselves to it through /channel_self
    /// (Capgo's `allow_self_set`).
    #[arg(long)]
    pub self_assign: bool,
    /// Answer on this channel in Capgo's manifest (delta) mode: every file
    /// on its own, Brotli where it pays, so devices download only what
    /// changed.
    #[arg(long)]
    pub capgo_manifest: bool,
    #[command(flatten)]
    pub store: StoreArg,
}

/// `lanseed channel list`.
#[derive(Debug, Args)]
pub struct ChannelListArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `lanseed device`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DeviceArgs {
    /// Talk to a running agent instead of starting one.
    #[command(subcommand)]
    pub action: Option<DeviceAction>,
    #[command(flatten)]
    pub run: DeviceRunArgs,
}

/// Requests to a running device agent.
#[derive(Debug, Subcommand)]
pub enum DeviceAction {
    /// Go back to the builtin bundle.
    Reset(DeviceStore),
    /// List the bundles on the device.
    List(DeviceStore),
    /// Follow another channel.
    Channel {
        /// The channel.
        name: String,
        #[command(flatten)]
        store: DeviceStore,
    },
    /// Delete a downloaded bundle (not the current one, nor the next, nor
    /// the fallback of a trial).
    Delete {
        /// Bundle id.
        id: String,
        #[command(flatten)]
        store: DeviceStore,
    },
    /// Switch to the downloaded next bundle now.
    Reload(DeviceStore),
}

/// The store of the agent to talk to.
#[derive(Debug, Args)]
pub struct DeviceStore {
    #[command(flatten)]
    pub store: StoreArg,
}

/// `lanseed device` (the agent).
#[derive(Debug, Args)]
pub struct DeviceRunArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// App id of the app this device runs.
    #[arg(long)]
    pub app: Option<String>,
    /// Channel to follow. Given, it replaces the channel the device
    /// follows (and is kept in the store); left out, the device keeps the
    /// one it follows (set by an earlier --channel or `lanseed device
    /// channel`), `production` on a first start. The device fetches and
    /// keeps releases of this channel only.
    #[arg(long)]
    pub channel: Option<String>,
    /// Trust file: the keys whose releases may be installed.
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// The builtin bundle (the web build shipped with the app): the floor
    /// every rollback can fall back to.
    #[arg(long, value_name = "DIR")]
    pub builtin: Option<PathBuf>,
    /// Where to serve the active bundle.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8787")]
    pub serve: std::net::SocketAddr,
    /// Another host name (or address) the kiosk server answers to, besides
    /// localhost, 127.0.0.0/8, [::1] and the --serve address; repeatable.
    /// Requests naming any other host get 403 (a guard against DNS
    /// rebinding).
    #[arg(long = "serve-name", value_name = "NAME")]
    pub serve_names: Vec<String>,
    /// How long a new bundle has to call notifyAppReady (at least 1s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub app_ready_timeout: std::time::Duration,
    /// When a downloaded bundle becomes current: next-start (at the agent's
    /// next start or on `lanseed device reload`) or immediate (now, and the
    /// open page reloads).
    #[arg(long, value_name = "MODE", default_value = "next-start", value_parser = ["next-start", "immediate"])]
    pub apply: String,
    /// Apply downloaded bundles in a daily maintenance window instead, in
    /// local time (e.g. 02:00-04:00; may wrap past midnight).
    #[arg(long, value_name = "HH:MM-HH:MM", conflicts_with = "apply")]
    pub apply_window: Option<String>,
    /// The native app's version; a change resets to the builtin bundle.
    #[arg(long, value_name = "SEMVER", default_value = "1.0.0")]
    pub native_version: String,
    /// Override the device id (used for rollout percentages).
    #[arg(long)]
    pub device_id: Option<String>,
    /// Keep bundles that failed.
    #[arg(long)]
    pub keep_failed: bool,
    /// Keep earlier good bundles (and their releases) instead of deleting
    /// the one before the last good one (Capgo's autoDeletePrevious off).
    #[arg(long)]
    pub keep_previous: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// `lanseed status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `lanseed pack`.
#[derive(Debug, Args)]
pub struct PackArgs {
    /// The web build: a folder with index.html at its root, or a zip of one
    /// (such as `@capgo/cli bundle zip` makes; a single top-level folder in
    /// the zip is flattened away).
    #[arg(value_name = "DIR|ZIP")]
    pub source: PathBuf,
    /// App id, reverse DNS (Capacitor's appId), e.g. com.example.app.
    #[arg(long)]
    pub app: String,
    /// Version of this bundle (semver, e.g. 1.4.2); for people, ordering
    /// uses the sequence number.
    #[arg(long = "version", value_name = "SEMVER")]
    pub bundle_version: String,
    /// Channel to publish on.
    #[arg(long, default_value = DEFAULT_CHANNEL)]
    pub channel: String,
    /// Secret key file made by `lanseed keygen`.
    #[arg(long, value_name = "FILE", env = "LANSEED_KEY")]
    pub key: PathBuf,
    #[command(flatten)]
    pub store: StoreArg,
    /// Sequence number [default: max(highest in the store + 1, current
    /// Unix time in seconds)].
    #[arg(long)]
    pub seq: Option<u64>,
    /// Lowest native app version that may install this bundle (semver).
    #[arg(long, value_name = "SEMVER")]
    pub min_native_version: Option<String>,
    /// Share of devices that install it, in percent (e.g. 10 or 2.5).
    #[arg(long, value_name = "PERCENT", default_value = "100")]
    pub rollout: Rollout,
    /// When devices stop installing it: a time (2027-01-31T00:00:00Z) or a
    /// duration from now (30days, 12h).
    #[arg(long, value_name = "TIME")]
    pub expires: Option<String>,
    /// Release notes.
    #[arg(long)]
    pub notes: Option<String>,
    /// Capgo private key (the .capgo_key_v2 of `npx @capgo/cli key
    /// create`): the release also carries the Capgo encryption v2
    /// artefacts of its bundle, for apps whose @capgo/capacitor-updater
    /// has the matching public key (see `lanseed capgo-encrypt --help`).
    #[arg(long, value_name = "FILE", env = "LANSEED_CAPGO_KEY")]
    pub capgo_key: Option<PathBuf>,
    #[command(flatten)]
    pub zip: ZipLimitArgs,
    /// Print the release as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Limits on what a zip may inflate to.
#[derive(Debug, Args)]
pub struct ZipLimitArgs {
    /// Most bytes a zip may inflate to in all (K, M, G suffixes allowed).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub max_unzipped_size: u64,
    /// Most bytes a large zip entry may inflate to per compressed byte.
    #[arg(long, value_name = "RATIO", default_value_t = 200)]
    pub max_ratio: u64,
}

/// `lanseed capgo-encrypt`.
#[derive(Debug, Args)]
pub struct CapgoEncryptArgs {
    /// App id.
    pub app: String,
    /// The version to encrypt (the newest release of it on its channel).
    #[arg(value_name = "VERSION")]
    pub bundle_version: String,
    /// The channel, when VERSION is on more than one.
    #[arg(long)]
    pub channel: Option<String>,
    /// Capgo private key (.capgo_key_v2, made by `npx @capgo/cli key
    /// create`; RSA-2048, PEM).
    #[arg(long, value_name = "FILE", env = "LANSEED_CAPGO_KEY")]
    pub capgo_key: PathBuf,
    /// Secret key file made by `lanseed keygen`, to sign the new release.
    #[arg(long, value_name = "FILE", env = "LANSEED_KEY")]
    pub key: PathBuf,
    #[command(flatten)]
    pub store: StoreArg,
    /// Print the new release as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `lanseed export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// App id.
    pub app: String,
    /// A channel (its newest release) or a version.
    #[arg(value_name = "CHANNEL|VERSION")]
    pub selector: String,
    /// File to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Write the bundle as a plain deterministic zip instead of a release
    /// file.
    #[arg(long, conflicts_with = "capgo")]
    pub zip: bool,
    /// Write the release's Capgo-encrypted zip (what the gateway serves to
    /// an app with a Capgo key) instead of a release file, and print its
    /// session key, checksum and key id.
    #[arg(long)]
    pub capgo: bool,
    #[command(flatten)]
    pub store: StoreArg,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `lanseed import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A release file made by `lanseed export`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Trust file: the release must be signed by a key in it.
    #[arg(long, value_name = "FILE")]
    pub trust: PathBuf,
    #[command(flatten)]
    pub store: StoreArg,
    #[command(flatten)]
    pub zip: ZipLimitArgs,
    /// Print the imported release as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `lanseed publish-static`.
#[derive(Debug, Args)]
pub struct PublishStaticArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// Folder to write the tree into (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print a summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Parses `1073741824`, `512K`, `64M`, `1G` (binary units).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("`{text}` is not a size such as 1G, 512M or 1048576"))
}

/// `lanseed releases`.
#[derive(Debug, Args)]
pub struct ReleasesArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// Only this app.
    #[arg(long)]
    pub app: Option<String>,
    /// Only this channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// `lanseed store ...`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Check every blob, manifest and release of a store.
    ///
    /// Hashes every blob, checks every manifest against its id and every
    /// release's signature (and, with --trust, that its key is trusted), and
    /// that each release's files are all present. Exits non-zero when
    /// anything is wrong.
    Verify(VerifyArgs),
    /// Drop old releases and every file no kept release needs.
    ///
    /// Keeps the --keep newest releases (by sequence number) of each app and
    /// channel, then deletes manifests and blobs no kept release uses, and
    /// leftovers of interrupted writes.
    Gc(GcArgs),
}

/// `lanseed store verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// Also require every release to be signed by a key in this trust file.
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `lanseed store gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// Releases to keep per app and channel (at least 1).
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub keep: usize,
    /// Show what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
