//! A PostgreSQL cluster and a RabbitMQ node of a run's own (the chaos run's, or one
//! test's), so that stopping them disturbs nothing else on the machine: a cluster made
//! with `initdb` in a temporary directory, a broker node with its own name, ports and
//! data directory. Each can be stopped hard and started again on the same data. When
//! the binaries are missing (or cannot run here), `start` fails and says why; the chaos
//! run then falls back to TCP proxies in front of the shared servers.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs a command to completion; fails with its output when it fails.
fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("Failed to start {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Waits until something accepts connections on `addr`.
async fn wait_listening(addr: SocketAddr, within: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not listen on {addr} within {within:?}")
}

/// A PostgreSQL cluster of the run's own.
pub struct OwnPostgres {
    bin: PathBuf,
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    as_postgres: bool,
}

impl OwnPostgres {
    /// Makes and starts a cluster (trust authentication, user `postgres`), if the
    /// server binaries are installed.
    pub async fn start() -> anyhow::Result<OwnPostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context("no /usr/lib/postgresql")?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("initdb").exists())
            .context("no initdb under /usr/lib/postgresql")?;
        let dir = std::env::temp_dir().join(format!(
            "recordsync-chaos-pg-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        // PostgreSQL refuses to run as root: run it as the postgres user then.
        let as_postgres = nix_is_root();
        if as_postgres {
            run(
                Command::new("chown").args(["postgres:postgres", &dir.to_string_lossy()]),
                "chown",
            )?;
        }
        let pg = OwnPostgres {
            bin,
            dir,
            port: free_port()?,
            as_postgres,
        };
        let data = pg.data();
        run(
            &mut pg.command(
                "initdb",
                &[
                    "-D",
                    &data,
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
            ),
            "initdb",
        )?;
        pg.up().await?;
        Ok(pg)
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args);
        cmd
    }

    /// Its directory (data, socket, log); removed when it is dropped.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its server URL (no database).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Starts the server and waits until it takes connections.
    pub async fn up(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.to_string_lossy()
        );
        let log = self.dir.join("log").to_string_lossy().into_owned();
        let data = self.data();
        let mut cmd = self.command(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
        tokio::task::spawn_blocking(move || run(&mut cmd, "pg_ctl start")).await??;
        wait_listening(
            SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(30),
            "PostgreSQL",
        )
        .await
    }

    /// Stops the server at once, as a crash would (`-m immediate`: no checkpoint,
    /// every connection cut; it recovers from its WAL on the next start).
    pub async fn down(&self) -> anyhow::Result<()> {
        let data = self.data();
        let mut cmd = self.command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        tokio::task::spawn_blocking(move || run(&mut cmd, "pg_ctl stop")).await?
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether this process runs as root.
fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A RabbitMQ node of the run's own: its own node name, AMQP and distribution ports,
/// data and log directories, and no plugins.
pub struct OwnRabbit {
    dir: PathBuf,
    node: String,
    /// Its AMQP port on 127.0.0.1.
    pub port: u16,
    dist_port: u16,
    server: Option<std::process::Child>,
}

impl OwnRabbit {
    /// Starts a node, if RabbitMQ is installed.
    pub async fn start() -> anyhow::Result<OwnRabbit> {
        if !Path::new("/usr/sbin/rabbitmq-server").exists()
            && Command::new("rabbitmq-server")
                .arg("--help")
                .output()
                .is_err()
        {
            bail!("rabbitmq-server is not installed");
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("recordsync-chaos-rabbit-{id}"));
        std::fs::create_dir_all(dir.join("log"))?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        let port = free_port()?;
        let mut rabbit = OwnRabbit {
            node: format!("rs-chaos-{}@localhost", &id[..8]),
            dir,
            port,
            dist_port: free_port()?,
            server: None,
        };
        std::fs::write(
            rabbit.dir.join("rabbitmq.conf"),
            format!("listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users = none\n"),
        )?;
        std::fs::create_dir_all(rabbit.dir.join("mnesia"))?;
        // Debian's rabbitmq-server drops root for the rabbitmq user, which must be able
        // to write the node's directories.
        if nix_is_root() {
            run(
                Command::new("chown").args([
                    "-R",
                    "rabbitmq:rabbitmq",
                    &rabbit.dir.to_string_lossy(),
                ]),
                "chown",
            )?;
        }
        rabbit.up().await?;
        Ok(rabbit)
    }

    fn env(&self, cmd: &mut Command) {
        let dir = self.dir.to_string_lossy();
        cmd.env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", format!("{dir}/mnesia"))
            .env("RABBITMQ_LOG_BASE", format!("{dir}/log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                format!("{dir}/enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", format!("{dir}/rabbitmq"))
            .env("RABBITMQ_PID_FILE", format!("{dir}/pid"));
    }

    /// Its directory (data, logs); removed when it is dropped.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its AMQP URL.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts the node (on the same data as before) and waits until it takes AMQP
    /// connections.
    pub async fn up(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("rabbitmq-server");
        self.env(&mut cmd);
        let child = cmd
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("Failed to start rabbitmq-server")?;
        self.server = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_listening(addr, Duration::from_secs(90), "the run's RabbitMQ node").await?;
        // The port opens a moment before the node takes logins.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match queue::connect(&self.url(), "recordsync-chaos-probe").await {
                Ok(conn) => {
                    let _ = conn.close(200, "ready".into()).await;
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => {
                    bail!("the run's RabbitMQ node did not take logins: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Stops the node (`rabbitmqctl stop`: the Erlang node ends) and waits for it.
    pub async fn down(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("rabbitmqctl");
        self.env(&mut cmd);
        cmd.args(["-n", &self.node, "stop"]);
        tokio::task::spawn_blocking(move || run(&mut cmd, "rabbitmqctl stop")).await??;
        if let Some(mut child) = self.server.take() {
            tokio::task::spawn_blocking(move || child.wait()).await??;
        }
        Ok(())
    }
}

impl Drop for OwnRabbit {
    fn drop(&mut self) {
        let mut cmd = Command::new("rabbitmqctl");
        self.env(&mut cmd);
        let _ = cmd
            .args(["-n", &self.node, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
