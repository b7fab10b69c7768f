//! `strom-testbed-echo`: a small HTTP server the test bed's smoke tests deploy as a pod, to look at
//! the pod from inside: its environment, files, hostname, name resolution, and other pods through
//! Services. Binds `$POD_IP` (else 127.0.0.1) on `--port`.
//!
//! GET /healthz                 200 ok
//! GET /ready                   200, or 503 after /set-ready/false (until /set-ready/true)
//! GET /env/NAME                the variable's value (404 if unset)
//! GET /file/PATH               the file's contents (absolute PATH)
//! GET /hostname                the UTS hostname
//! GET /resolve/NAME            the addresses NAME resolves to, sorted, comma-separated
//! GET /get/HOST:PORT/PATH      the body of GET http://HOST:PORT/PATH (HOST resolved here)
//! GET /exit/CODE               exits with CODE

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Exit with `--exit-code` after this many milliseconds.
    #[arg(long)]
    exit_after_ms: Option<u64>,
    #[arg(long, default_value_t = 0)]
    exit_code: i32,
    /// Keep running on SIGTERM (so that only SIGKILL stops it).
    #[arg(long)]
    ignore_sigterm: bool,
    /// Printed on start, to tell containers apart in logs.
    #[arg(long, default_value = "")]
    message: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let ip = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".into());
    let listener = TcpListener::bind((ip.as_str(), args.port))
        .await
        .with_context(|| format!("bind {ip}:{}", args.port))?;
    println!("echo: listening on {ip}:{} {}", args.port, args.message);
    let ready = Arc::new(AtomicBool::new(true));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let exit_after = async {
        match args.exit_after_ms {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(exit_after);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let ready = ready.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, ready).await {
                        eprintln!("echo: request failed: {e:#}");
                    }
                });
            }
            _ = sigterm.recv() => {
                println!("echo: SIGTERM received");
                if !args.ignore_sigterm {
                    println!("echo: exiting on SIGTERM");
                    return Ok(());
                }
            }
            () = &mut exit_after => {
                println!("echo: exiting with {}", args.exit_code);
                std::process::exit(args.exit_code);
            }
        }
    }
}

async fn serve(stream: TcpStream, ready: Arc<AtomicBool>) -> Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    // Drain the headers.
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).await? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let (code, body) = route(&path, &ready).await;
    let reason = if code == 200 { "OK" } else { "Error" };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = reader.into_inner();
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    if let Some(code) = path.strip_prefix("/exit/") {
        std::process::exit(code.parse().unwrap_or(1));
    }
    Ok(())
}

async fn route(path: &str, ready: &AtomicBool) -> (u16, String) {
    if path == "/healthz" {
        return (200, "ok".into());
    }
    if path == "/ready" {
        return if ready.load(Ordering::SeqCst) {
            (200, "ready".into())
        } else {
            (503, "not ready".into())
        };
    }
    if let Some(v) = path.strip_prefix("/set-ready/") {
        ready.store(v == "true", Ordering::SeqCst);
        return (200, v.into());
    }
    if let Some(name) = path.strip_prefix("/env/") {
        return match std::env::var(name) {
            Ok(v) => (200, v),
            Err(_) => (404, format!("{name} is not set")),
        };
    }
    if let Some(file) = path.strip_prefix("/file") {
        return match std::fs::read_to_string(file) {
            Ok(v) => (200, v),
            Err(e) => (404, format!("{file}: {e}")),
        };
    }
    if path == "/hostname" {
        return match std::fs::read_to_string("/proc/sys/kernel/hostname") {
            Ok(v) => (200, v.trim().to_string()),
            Err(e) => (500, e.to_string()),
        };
    }
    if let Some(name) = path.strip_prefix("/resolve/") {
        return match tokio::net::lookup_host((name, 0)).await {
            Ok(addrs) => {
                let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                ips.sort();
                ips.dedup();
                (200, ips.join(","))
            }
            Err(e) => (404, format!("{name}: {e}")),
        };
    }
    if let Some(rest) = path.strip_prefix("/get/") {
        let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
        return match get(authority, &format!("/{tail}")).await {
            Ok(body) => (200, body),
            Err(e) => (502, format!("{e:#}")),
        };
    }
    if path.starts_with("/exit/") {
        return (200, "bye".into());
    }
    (404, format!("no route {path}"))
}

async fn get(authority: &str, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(authority)
        .await
        .with_context(|| format!("connect {authority}"))?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(body)
}
