//! The bench's child processes: this same executable in a hidden mode, which binds
//! 127.0.0.1:0 and announces its address on the first line of its stdout.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a child may take to announce its address.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a child may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running child process; dropping it kills the process.
pub struct Proc {
    name: String,
    child: Option<std::process::Child>,
    /// The write end of the child's stdin: when the bench exits, however it exits, the
    /// child reads EOF and stops.
    _stdin: Option<std::process::ChildStdin>,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl Proc {
    /// Starts `current_exe <mode>` with `env` added to the environment, logging at
    /// warn level to the inherited stderr, and waits for its address.
    pub async fn spawn(name: &str, mode: &str, env: &[(String, String)]) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe().context("Failed to find the bench executable")?;
        let mut child = Command::new(exe)
            .arg(mode)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("Failed to start the {name} process"))?;
        let stdout = child.stdout.take().context("the child has no stdout")?;
        let stdin = child.stdin.take();
        // The first line is read on a blocking thread; the rest of stdout is drained so
        // that a chatty child can never block on a full pipe.
        let first_line = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line);
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            read.map(|_| line)
        });
        let mut proc = Proc {
            name: name.to_owned(),
            child: Some(child),
            _stdin: stdin,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = match tokio::time::timeout(ANNOUNCE_TIMEOUT, first_line).await {
            Err(_) => {
                bail!("the {name} process did not announce its address within {ANNOUNCE_TIMEOUT:?}")
            }
            Ok(joined) => joined.context("the stdout reader failed")??,
        };
        match line.trim().strip_prefix("LISTENING ") {
            Some(addr) => {
                proc.addr = addr
                    .parse()
                    .with_context(|| format!("the {name} process announced {line:?}"))?;
                Ok(proc)
            }
            None => {
                let status = proc.child.as_mut().and_then(|c| c.wait().ok());
                bail!(
                    "the {name} process exited before listening ({}); its stderr is above",
                    status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string())
                )
            }
        }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// Its peak resident set size so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        peak_rss_kib(self.pid()).with_context(|| format!("Failed to read the {} RSS", self.name))
    }

    /// SIGKILL, as a crash or the OOM killer would; waits for the exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its exit status, if it has exited by itself.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends SIGTERM and waits for the exit; kills the process if it lingers.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let signalled = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while signalled && Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    eprintln!("bench: the {} process exited with {status}", self.name);
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "bench: the {} process did not stop on SIGTERM; killing it",
            self.name
        );
        child.kill()?;
        child.wait()?;
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `VmHWM` line of `/proc/<pid>/status`, in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_hwm(&status).context("no VmHWM line in /proc/<pid>/status")
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_hwm() {
        let status = "Name:\tbench\nVmPeak:\t  100 kB\nVmHWM:\t   23456 kB\nVmRSS:\t 20000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(23_456));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn reads_its_own_peak() {
        assert!(peak_rss_kib(std::process::id()).unwrap() > 0);
    }
}
