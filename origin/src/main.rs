//! Starts the origin: configuration, store, listeners; stops on SIGINT/SIGTERM.

use origin::config::{Config, ConfigError, LogFormat, Settings};
use origin::server::{open_store, start};

fn main() -> std::process::ExitCode {
    let settings = match Settings::load() {
        Ok(s) => s,
        // --help and --version, and clap's own errors with their usage line.
        Err(ConfigError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("origin: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if settings.health_probe {
        return match origin::probe::health(settings.app_listen) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("origin: unhealthy: {e}");
                std::process::ExitCode::from(1)
            }
        };
    }
    let config = match Config::from_settings(settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("origin: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORIGIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal (not in files, journald or `podman logs`).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if config.log_format == LogFormat::Json {
        logs.json().init();
    } else {
        logs.init();
    }
    // Every device connection is a descriptor: the soft limit goes up to
    // the hard one (devices beyond it less --fd-reserve are turned away).
    match origin::fd::raise_nofile() {
        Ok((before, now, hard)) => {
            tracing::info!("open files: soft limit {now} (was {before}), hard limit {hard}")
        }
        Err(e) => tracing::warn!("raising the open-file limit: {e}"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(config))
}

async fn run(config: Config) -> std::process::ExitCode {
    let store = match open_store(&config).await {
        Ok(s) => s,
        Err(e) => {
            match &config.store {
                Some(url) => tracing::error!("opening the store at {url}: {e}"),
                None => tracing::error!("opening the store in {}: {e}", config.data_dir.display()),
            }
            return std::process::ExitCode::from(1);
        }
    };
    let running = match start(config, store).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("binding listeners: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let c = &running.state.config;
    tracing::info!(
        app = %c.app_listen, ws = %c.ws_listen, h2 = %c.h2_listen, metrics = %c.metrics_listen,
        data = %c.data_dir.display(),
        "origin listening"
    );
    // One line on stdout for scripts that wait for readiness.
    println!(
        "origin ready app={} ws={} h2={} metrics={}",
        c.app_listen, c.ws_listen, c.h2_listen, c.metrics_listen
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    running.stop().await;
    tracing::info!("origin stopped");
    std::process::ExitCode::SUCCESS
}
