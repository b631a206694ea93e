//! `pushctl`: a Web Push device and application server on the command line.

use clap::{Args, Parser, Subcommand};
use pushclient::app::{self, PushOptions};
use pushclient::device::{self, Delivery, Payload};
use pushclient::list::{self, ListFile, Status};
use pushclient::state::{self, DeviceState};
use pushclient::vapid::Vapid;
use pushclient::{keys, subscription, Error, Subscription};
use shared::headers::{Topic, Urgency};
use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Exit status when a `--timeout` ends a command before it got what it waited for.
const EXIT_TIMEOUT: u8 = 3;

#[derive(Parser)]
#[command(
    name = "pushctl",
    version,
    about = "Web Push from a terminal: VAPID keys, a device that subscribes and listens, \
             and an application server that sends to one subscription or to a list"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a VAPID key pair: the private key as PEM, the public key printed.
    Keys {
        /// Where to write the private key (PKCS#8 PEM, mode 0600).
        #[arg(long, required_unless_present = "show")]
        out: Option<PathBuf>,
        /// Print the public key of an existing private key file instead.
        #[arg(long, conflicts_with = "out")]
        show: Option<PathBuf>,
        /// Overwrite --out if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Act as a device: subscribe, print the subscription JSON, keep the keys in a state file.
    Subscribe {
        /// ws://host:port (WebSocket, as Firefox) or http://host:port (RFC 8030 over HTTP/2).
        server: String,
        /// The device's state file to write (private key, auth secret, subscription).
        #[arg(long)]
        state: PathBuf,
        /// Restrict the subscription to an application server's VAPID public key (base64url)…
        #[arg(long, conflicts_with = "vapid")]
        vapid_key: Option<String>,
        /// …or to the public key of this VAPID private key file.
        #[arg(long)]
        vapid: Option<PathBuf>,
        /// Overwrite --state if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print a device's subscription JSON again.
    Subscription {
        /// The device's state file.
        #[arg(long)]
        state: PathBuf,
    },
    /// Act as a device: connect, then decrypt, print and acknowledge each message.
    Listen {
        /// The device's state file.
        #[arg(long)]
        state: PathBuf,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds (exit status 3 if --count was not reached).
        #[arg(long)]
        timeout: Option<u64>,
        /// Print one JSON object per message instead of text.
        #[arg(long)]
        json: bool,
    },
    /// End a device's subscription at the service.
    Unsubscribe {
        /// The device's state file.
        #[arg(long)]
        state: PathBuf,
    },
    /// Act as an application server: send one encrypted message to a subscription.
    Send {
        /// A file with the subscription JSON (or a device state file).
        #[arg(long)]
        to: PathBuf,
        /// The message text; read from standard input when absent.
        text: Option<String>,
        /// Send a message with no body.
        #[arg(long, conflicts_with = "text")]
        empty: bool,
        #[command(flatten)]
        push: PushArgs,
        #[command(flatten)]
        vapid: VapidArgs,
    },
    /// Act as an application server: lists of subscriptions that share a group key.
    #[command(subcommand)]
    List(ListCommand),
}

#[derive(Subcommand)]
enum ListCommand {
    /// Create a list: a new group key, wrapped for each member (ECDH-ES+A128KW to its p256dh).
    Create {
        /// The list registration service (the subscription's rel="urn:ietf:params:push:multi" link).
        #[arg(long)]
        service: String,
        /// A file of subscription JSONs (one per line, concatenated, or a JSON array).
        #[arg(long)]
        subscriptions: PathBuf,
        /// The list file to write: list URL, group key, members' keys (mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// Overwrite --out if it exists.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        vapid: VapidArgs,
    },
    /// Add members, with the current group key wrapped for each.
    Add {
        #[command(flatten)]
        list: ListArgs,
        /// A file of subscription JSONs.
        #[arg(long)]
        subscriptions: PathBuf,
    },
    /// Remove members.
    Remove {
        #[command(flatten)]
        list: ListArgs,
        /// A file of subscription JSONs to remove.
        #[arg(long)]
        subscriptions: Option<PathBuf>,
        /// Push resource URLs (endpoints) to remove.
        endpoints: Vec<String>,
    },
    /// Replace the group key: a new key wrapped for every member, sent as merge patches.
    RotateKey {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Push one message to every member (JWE, A128GCM under the group key).
    Push {
        #[command(flatten)]
        list: ListArgs,
        /// The message text; read from standard input when absent.
        text: Option<String>,
        /// Send a message with no body (every browser can receive it).
        #[arg(long, conflicts_with = "text")]
        empty: bool,
        /// Then follow the delivery, as `list watch` does.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        watch_args: WatchArgs,
        #[command(flatten)]
        push: PushArgs,
    },
    /// Print the members (and their count) as the service holds them.
    Members {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Delete the list at the service.
    Delete {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Follow a list message's delivery until fanned out and nothing is waiting.
    Watch {
        /// The list message URL (`Location` of a list push).
        url: String,
        #[command(flatten)]
        watch: WatchArgs,
        /// The list file: its owner's VAPID key reads an owned list's messages.
        #[arg(long = "list")]
        file: Option<PathBuf>,
        #[command(flatten)]
        vapid: VapidArgs,
    },
}

#[derive(Args)]
struct ListArgs {
    /// The list file written by `list create`.
    #[arg(long = "list")]
    file: PathBuf,
    #[command(flatten)]
    vapid: VapidArgs,
}

#[derive(Args)]
struct VapidArgs {
    /// Sign with this VAPID private key (PEM, or base64url); a list created with
    /// one is owned by it and the list file remembers it.
    #[arg(long)]
    vapid: Option<PathBuf>,
    /// The VAPID contact (sub claim): mailto: or https: URI.
    #[arg(long)]
    subject: Option<String>,
}

#[derive(Args)]
struct PushArgs {
    /// Seconds the service keeps the message for an absent device.
    #[arg(long, default_value_t = 86_400)]
    ttl: u32,
    /// very-low, low, normal or high.
    #[arg(long, value_parser = parse_urgency)]
    urgency: Option<Urgency>,
    /// Replace an undelivered message with the same topic (up to 32 of A-Z a-z 0-9 - _).
    #[arg(long, value_parser = parse_topic)]
    topic: Option<Topic>,
}

#[derive(Args, Clone, Copy)]
struct WatchArgs {
    /// Milliseconds between polls.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// Stop watching after this many seconds (exit status 3).
    #[arg(long)]
    timeout: Option<u64>,
}

fn parse_urgency(s: &str) -> Result<Urgency, String> {
    Urgency::parse(Some(s)).map_err(|e| e.to_string())
}

fn parse_topic(s: &str) -> Result<Topic, String> {
    match Topic::parse(Some(s)) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err("empty topic".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl PushArgs {
    fn options(&self) -> PushOptions {
        PushOptions {
            ttl: self.ttl,
            urgency: self.urgency,
            topic: self.topic.clone(),
        }
    }
}

impl VapidArgs {
    /// The signer, from --vapid or else the file a list remembers.
    fn load(&self, remembered: Option<&str>) -> Result<Option<Vapid>, Error> {
        let path = self.vapid.clone().or_else(|| remembered.map(PathBuf::from));
        path.map(|p| Ok(Vapid::new(&read_private_key(&p)?, self.subject.clone())))
            .transpose()
    }
}

/// How a command ended, when not with an error.
enum Outcome {
    Done,
    TimedOut,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::TimedOut) => ExitCode::from(EXIT_TIMEOUT),
        Err(e) => {
            eprintln!("pushctl: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<Outcome, Error> {
    match command {
        Command::Keys { out, show, force } => keys_cmd(out, show, force),
        Command::Subscribe {
            server,
            state,
            vapid_key,
            vapid,
            force,
        } => {
            refuse_overwrite(&state, force)?;
            let key = match (vapid_key, vapid) {
                (Some(k), _) => Some(k),
                (None, Some(p)) => Some(keys::public_b64(&read_private_key(&p)?.public_key())),
                (None, None) => None,
            };
            let st = device::subscribe(&server, key.as_deref()).await?;
            state::write_private_json(&state, &st)?;
            println!(
                "{}",
                serde_json::to_string(&st.subscription()).expect("JSON")
            );
            eprintln!("device state saved in {}", state.display());
            if let Some(m) = &st.multi {
                eprintln!("list registration service: {m}");
            }
            Ok(Outcome::Done)
        }
        Command::Subscription { state } => {
            let st: DeviceState = state::read_json(&state)?;
            println!(
                "{}",
                serde_json::to_string(&st.subscription()).expect("JSON")
            );
            Ok(Outcome::Done)
        }
        Command::Listen {
            state,
            count,
            timeout,
            json,
        } => listen(&state, count, timeout, json).await,
        Command::Unsubscribe { state } => {
            let st: DeviceState = state::read_json(&state)?;
            device::unsubscribe(&st).await?;
            println!("unsubscribed {}", st.endpoint);
            Ok(Outcome::Done)
        }
        Command::Send {
            to,
            text,
            empty,
            push,
            vapid,
        } => {
            let sub = read_one_subscription(&to)?;
            let payload = message_text(text, empty)?;
            let vapid = vapid.load(None)?;
            let sent = app::send(&sub, payload.as_deref(), &push.options(), vapid.as_ref()).await?;
            println!(
                "sent: {} (ttl {})",
                sent.status,
                sent.ttl.map_or("?".into(), |t| t.to_string())
            );
            if let Some(l) = &sent.location {
                println!("message: {l}");
            }
            if let Some(m) = &sent.multi {
                println!("list service: {m}");
            }
            Ok(Outcome::Done)
        }
        Command::List(l) => list_cmd(l).await,
    }
}

fn keys_cmd(out: Option<PathBuf>, show: Option<PathBuf>, force: bool) -> Result<Outcome, Error> {
    if let Some(p) = show {
        println!("{}", keys::public_b64(&read_private_key(&p)?.public_key()));
        return Ok(Outcome::Done);
    }
    let out = out.expect("clap requires --out or --show");
    refuse_overwrite(&out, force)?;
    let k = keys::generate();
    state::write_private(&out, keys::to_pem(&k).as_bytes())?;
    println!("{}", keys::public_b64(&k.public_key()));
    eprintln!(
        "private key saved in {}; the line above is the public key (applicationServerKey)",
        out.display()
    );
    Ok(Outcome::Done)
}

async fn list_cmd(cmd: ListCommand) -> Result<Outcome, Error> {
    match cmd {
        ListCommand::Create {
            service,
            subscriptions,
            out,
            force,
            vapid,
        } => {
            refuse_overwrite(&out, force)?;
            let subs = read_subscriptions(&subscriptions)?;
            let signer = vapid.load(None)?;
            let mut file = list::create(&service, &subs, signer.as_ref()).await?;
            file.vapid_key_file = vapid
                .vapid
                .as_ref()
                .map(|p| absolute(p).display().to_string());
            state::write_private_json(&out, &file)?;
            println!("list: {}", file.list);
            println!(
                "{} member(s); group key and members' keys saved in {}",
                file.members.len(),
                out.display()
            );
            Ok(Outcome::Done)
        }
        ListCommand::Add {
            list,
            subscriptions,
        } => {
            let (mut file, vapid) = open_list(&list)?;
            let subs = read_subscriptions(&subscriptions)?;
            let report = list::add(&mut file, &subs, vapid.as_ref()).await?;
            state::write_private_json(&list.file, &file)?;
            print_report("added", &report);
            Ok(Outcome::Done)
        }
        ListCommand::Remove {
            list,
            subscriptions,
            mut endpoints,
        } => {
            let (mut file, vapid) = open_list(&list)?;
            if let Some(p) = subscriptions {
                endpoints.extend(read_subscriptions(&p)?.into_iter().map(|s| s.endpoint));
            }
            if endpoints.is_empty() {
                return Err(Error::Usage(
                    "name the members to remove: endpoints, or --subscriptions FILE",
                ));
            }
            let report = list::remove(&mut file, &endpoints, vapid.as_ref()).await?;
            state::write_private_json(&list.file, &file)?;
            print_report("removed", &report);
            Ok(Outcome::Done)
        }
        ListCommand::RotateKey { list } => {
            let (mut file, vapid) = open_list(&list)?;
            let r = list::rotate_key(&mut file, vapid.as_ref()).await?;
            state::write_private_json(&list.file, &file)?;
            println!(
                "group key rotated (version {}), wrapped again for {} member(s)",
                file.key_version, r.report.applied
            );
            for u in &r.without_keys {
                eprintln!(
                    "warning: no keys for member {u} in the list file: it cannot read new messages"
                );
            }
            for u in &r.departed {
                eprintln!("note: {u} had left the list; dropped from the list file");
            }
            for m in &r.report.rejected {
                eprintln!("refused: {} ({}: {})", m.uri, m.reason, m.detail);
            }
            Ok(Outcome::Done)
        }
        ListCommand::Push {
            list,
            text,
            empty,
            watch,
            watch_args,
            push,
        } => {
            let (file, vapid) = open_list(&list)?;
            let payload = message_text(text, empty)?;
            let sent =
                list::push(&file, payload.as_deref(), &push.options(), vapid.as_ref()).await?;
            let url = sent
                .location
                .ok_or_else(|| Error::Protocol("a list push has no Location".into()))?;
            println!(
                "list message: {url} ({} member(s))",
                sent.member_count.map_or("?".into(), |c| c.to_string())
            );
            if watch {
                return watch_status(&url, watch_args, vapid.as_ref()).await;
            }
            Ok(Outcome::Done)
        }
        ListCommand::Members { list } => {
            let (file, vapid) = open_list(&list)?;
            let (count, members) = list::members(&file.list, vapid.as_ref()).await?;
            for uri in members.keys() {
                let known = if file.members.contains_key(uri) {
                    ""
                } else {
                    "  (no keys in the list file)"
                };
                println!("{uri}{known}");
            }
            println!("{count} member(s)");
            Ok(Outcome::Done)
        }
        ListCommand::Delete { list } => {
            let (file, vapid) = open_list(&list)?;
            list::delete(&file, vapid.as_ref()).await?;
            println!("deleted {}", file.list);
            Ok(Outcome::Done)
        }
        ListCommand::Watch {
            url,
            watch,
            file,
            vapid,
        } => {
            let remembered = match file {
                Some(f) => state::read_json::<ListFile>(&f)?.vapid_key_file,
                None => None,
            };
            let vapid = vapid.load(remembered.as_deref())?;
            watch_status(&url, watch, vapid.as_ref()).await
        }
    }
}

fn print_report(verb: &str, r: &list::PatchReport) {
    let refused = r.refused.max(r.rejected.len() as u64);
    println!(
        "{verb}: {} applied, {refused} refused; the list has {} member(s)",
        r.applied, r.members
    );
    for m in &r.rejected {
        eprintln!("refused: {} ({}: {})", m.uri, m.reason, m.detail);
    }
}

fn open_list(args: &ListArgs) -> Result<(ListFile, Option<Vapid>), Error> {
    let file: ListFile = state::read_json(&args.file)?;
    let vapid = args.vapid.load(file.vapid_key_file.as_deref())?;
    Ok((file, vapid))
}

/// Polls a list message's status until it is done; a progress bar on a
/// terminal, a line per change otherwise.
async fn watch_status(url: &str, args: WatchArgs, vapid: Option<&Vapid>) -> Result<Outcome, Error> {
    let tty = std::io::stdout().is_terminal();
    let start = Instant::now();
    let mut last: Option<Status> = None;
    loop {
        let s = list::status(url, vapid).await?;
        if tty {
            print!("\r{}\x1b[K", progress_line(&s, true));
            let _ = std::io::stdout().flush();
        } else if last.as_ref() != Some(&s) {
            println!("{}", progress_line(&s, false));
        }
        let done = s.done();
        last = Some(s);
        if done {
            if tty {
                println!();
            }
            return Ok(Outcome::Done);
        }
        if args
            .timeout
            .is_some_and(|t| start.elapsed() >= Duration::from_secs(t))
        {
            if tty {
                println!();
            }
            eprintln!(
                "pushctl: still waiting after {} s",
                start.elapsed().as_secs()
            );
            return Ok(Outcome::TimedOut);
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms.max(50))).await;
    }
}

/// `[#######-------] 7/12 delivered, 5 stored, 0 expired, 0 failed, fanning out`.
fn progress_line(s: &Status, bar: bool) -> String {
    const WIDTH: u64 = 30;
    let settled = s.delivered + s.expired + s.failed + s.dropped;
    let text = format!(
        "{}/{} delivered, {} stored, {} expired, {} failed{}{}",
        s.delivered,
        s.members,
        s.stored,
        s.expired,
        s.failed,
        if s.dropped > 0 {
            format!(", {} dropped", s.dropped)
        } else {
            String::new()
        },
        if s.fanout_finished {
            ""
        } else {
            ", fanning out"
        }
    );
    if !bar {
        return text;
    }
    let filled = (settled * WIDTH)
        .checked_div(s.members)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    format!(
        "[{}{}] {text}",
        "#".repeat(filled as usize),
        "-".repeat((WIDTH - filled) as usize)
    )
}

async fn listen(
    path: &Path,
    count: Option<u64>,
    timeout: Option<u64>,
    json: bool,
) -> Result<Outcome, Error> {
    let st: DeviceState = state::read_json(path)?;
    let mut seen = 0u64;
    let on_message = |d: &Delivery| {
        print_delivery(d, json);
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let limit = timeout.map_or(Duration::MAX, Duration::from_secs);
    eprintln!("listening for {} (Ctrl-C to stop)", st.endpoint);
    tokio::select! {
        r = tokio::time::timeout(limit, device::listen(&st, on_message)) => match r {
            Ok(r) => r.map(|_| Outcome::Done),
            Err(_) if count.is_some() => Ok(Outcome::TimedOut),
            Err(_) => Ok(Outcome::Done),
        },
        _ = tokio::signal::ctrl_c() => Ok(Outcome::Done),
    }
}

fn print_delivery(d: &Delivery, json: bool) {
    match (&d.payload, json) {
        (Ok(p), true) => {
            let text = String::from_utf8_lossy(p.data());
            println!(
                "{}",
                serde_json::json!({"id": d.message.id, "kind": p.kind(), "text": text})
            );
        }
        (Ok(Payload::Empty), false) => println!("[empty]"),
        (Ok(p), false) => println!("[{}] {}", p.kind(), String::from_utf8_lossy(p.data())),
        (Err(e), true) => println!(
            "{}",
            serde_json::json!({"id": d.message.id, "kind": "error", "error": e.to_string()})
        ),
        (Err(e), false) => eprintln!("message {}: cannot read it: {e}", d.message.id),
    }
}

fn refuse_overwrite(path: &Path, force: bool) -> Result<(), Error> {
    if !force && path.exists() {
        return Err(Error::Exists(path.to_owned()));
    }
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

fn read_text(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::file(path, e))
}

fn read_private_key(path: &Path) -> Result<p256::SecretKey, Error> {
    keys::parse_private(&read_text(path)?).map_err(|e| Error::FileFormat {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

fn read_subscriptions(path: &Path) -> Result<Vec<Subscription>, Error> {
    let subs = subscription::parse_many(&read_text(path)?).map_err(|e| Error::FileFormat {
        path: path.to_owned(),
        detail: format!("not subscription JSON: {e}"),
    })?;
    if subs.is_empty() {
        return Err(Error::FileFormat {
            path: path.to_owned(),
            detail: "no subscriptions in it".into(),
        });
    }
    Ok(subs)
}

/// One subscription from a subscription JSON file or a device state file.
fn read_one_subscription(path: &Path) -> Result<Subscription, Error> {
    let text = read_text(path)?;
    if let Ok(st) = serde_json::from_str::<DeviceState>(&text) {
        return Ok(st.subscription());
    }
    let mut subs = read_subscriptions(path)?;
    if subs.len() > 1 {
        return Err(Error::FileFormat {
            path: path.to_owned(),
            detail: format!("{} subscriptions; send takes one", subs.len()),
        });
    }
    Ok(subs.remove(0))
}

/// The message body: the argument, nothing for --empty, else standard input.
fn message_text(text: Option<String>, empty: bool) -> Result<Option<Vec<u8>>, Error> {
    if empty {
        return Ok(None);
    }
    if let Some(t) = text {
        return Ok(Some(t.into_bytes()));
    }
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| Error::file("<stdin>", e))?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(delivered: u64, stored: u64, fanout_finished: bool) -> Status {
        Status {
            members: 4,
            delivered,
            stored,
            fanout_finished,
            ..Default::default()
        }
    }

    #[test]
    fn progress_lines() {
        let s = status(1, 3, false);
        assert_eq!(
            progress_line(&s, false),
            "1/4 delivered, 3 stored, 0 expired, 0 failed, fanning out"
        );
        let bar = progress_line(&status(2, 2, true), true);
        assert!(bar.starts_with(&format!("[{}{}] 2/4", "#".repeat(15), "-".repeat(15))));
        let empty = Status {
            fanout_finished: true,
            ..Default::default()
        };
        assert!(progress_line(&empty, true).starts_with(&format!("[{}]", "#".repeat(30))));
        assert!(empty.done() && !s.done());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        assert!(parse_urgency("high").is_ok() && parse_urgency("urgent").is_err());
        assert!(parse_topic("score_1").is_ok() && parse_topic("no spaces").is_err());
    }
}
