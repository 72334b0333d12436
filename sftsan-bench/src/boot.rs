//! One VM's boot, timed: a real guest (QEMU, TCG) or a replay of the recorded boot trace
//! (qemu-io issuing the same requests in order), each in its node's network namespace and
//! reading its disk through the method under test.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sftsan_core::backends::userspace::qapi::{QueryBlockstats, Quit, Shutdown};
use sftsan_core::backends::userspace::Qmp;
use sftsan_core::transport::{NetnsTransport, Transport};

use crate::workload::Workload;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootMode {
    /// A real guest boots: kernel, initramfs, the disk's init reading its working set.
    Guest,
    /// qemu-io replays the recorded boot trace: no guest CPU, so many more VMs fit.
    Replay,
}

/// A VM to boot: its disk (a qcow2 overlay) on `node`, whose namespace is `netns`.
#[derive(Debug, Clone)]
pub struct Vm {
    pub name: String,
    pub node: String,
    pub netns: String,
    pub disk: PathBuf,
    /// Its QMP socket, console and error log go here.
    pub run_dir: PathBuf,
}

/// A finished boot; times in seconds since the method started.
#[derive(Debug, Clone, Serialize)]
pub struct Boot {
    pub vm: String,
    pub node: String,
    pub start: f64,
    pub end: f64,
    /// Bytes the VM read from its disk.
    pub read_bytes: u64,
}

impl Boot {
    pub fn seconds(&self) -> f64 {
        self.end - self.start
    }
}

pub fn boot(vm: &Vm, w: &Workload, mode: BootMode, t0: Instant, timeout: Duration) -> Result<Boot> {
    std::fs::create_dir_all(&vm.run_dir)?;
    let boot = match mode {
        BootMode::Guest => guest(vm, w, t0, timeout),
        BootMode::Replay => replay(vm, w, t0, timeout),
    };
    boot.with_context(|| format!("VM {} on {}", vm.name, vm.node))
}

/// A command in the node's namespace whose process is killed when the thread that started
/// it ends: an interrupted benchmark leaves no VM behind (each waits on a scoped thread).
pub fn in_node(netns: &str, program: &str) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = NetnsTransport::new(netns).command(program);
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// A child process killed (and reaped) if still running when dropped.
struct Reaped(Child);

impl Reaped {
    /// Waits for the process to exit, polling until `timeout`; kills it after that.
    fn wait(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn guest(vm: &Vm, w: &Workload, t0: Instant, timeout: Duration) -> Result<Boot> {
    let m = &w.manifest;
    let qmp_path = vm.run_dir.join(format!("{}.qmp", vm.name));
    let errors = vm.run_dir.join(format!("{}.stderr", vm.name));
    let disk = serde_json::json!({
        "driver": "qcow2", "node-name": "disk",
        "file": {"driver": "file", "filename": vm.disk},
    });
    let mut cmd = in_node(&vm.netns, "qemu-system-x86_64");
    cmd.args(&m.qemu_args)
        .arg("-kernel")
        .arg(w.path(&m.vmlinuz))
        .arg("-initrd")
        .arg(w.path(&m.initrd))
        .arg("-append")
        .arg(m.append.replace("{vm}", &vm.name))
        .arg("-blockdev")
        .arg(disk.to_string())
        .arg("-device")
        .arg(format!("{},drive=disk,id=vda", m.disk_device))
        .arg("-serial")
        .arg("stdio")
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
        // Stay after the guest powers off, so its disk statistics can be read.
        .arg("-no-shutdown")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&errors)?);
    let start = t0.elapsed().as_secs_f64();
    let mut child = Reaped(cmd.spawn().context("cannot start qemu-system-x86_64")?);
    let console = child.0.stdout.take().context("no console pipe")?;
    let (lines, console_lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(console).lines().map_while(Result::ok) {
            if lines.send((t0.elapsed().as_secs_f64(), line)).is_err() {
                break;
            }
        }
    });
    // Connected before the guest can power off: QMP keeps no events for later clients.
    let mut qmp = connect_qmp(&qmp_path, &mut child, Duration::from_secs(60))?;
    let marker = m.booted_marker.replace("{vm}", &vm.name);
    let deadline = Instant::now() + timeout;
    let end = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match console_lines.recv_timeout(left) {
            Ok((t, line)) if line.trim_end().starts_with(&marker) => break t,
            Ok((_, line)) if line.contains("sftsan-bench failed") => bail!("{}", line.trim()),
            Ok(_) => continue,
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("not booted after {timeout:?}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!(
                    "QEMU exited before the guest booted: {}",
                    last_lines(&errors, 3)
                )
            }
        }
    };
    qmp.wait_event(Duration::from_secs(60), |_: &Shutdown| true)?;
    let stats = qmp.run(&QueryBlockstats { query_nodes: false })?;
    let read_bytes = stats
        .iter()
        .find(|s| s.qdev.as_deref().is_some_and(|q| q.contains("vda")))
        .map(|s| s.stats.rd_bytes)
        .context("query-blockstats has no entry for the VM's disk")?;
    // QEMU may close the monitor before it answers `quit`: its exit is what counts.
    let _ = qmp.run(&Quit {});
    child.wait(Duration::from_secs(30))?;
    let _ = std::fs::remove_file(&qmp_path);
    Ok(Boot {
        vm: vm.name.clone(),
        node: vm.node.clone(),
        start,
        end,
        read_bytes,
    })
}

/// Connects to QEMU's monitor once its socket exists (polled until `timeout`).
fn connect_qmp(path: &Path, child: &mut Reaped, timeout: Duration) -> Result<Qmp> {
    let deadline = Instant::now() + timeout;
    loop {
        match Qmp::connect(path, Duration::from_secs(30)) {
            Ok(qmp) => return Ok(qmp),
            Err(e) if Instant::now() >= deadline => return Err(e.into()),
            Err(_) => {}
        }
        if let Some(status) = child.0.try_wait()? {
            bail!("QEMU exited ({status}) before its monitor was up");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// qemu-io commands that repeat the trace: reads, and writes of a fixed pattern.
fn replay_script(w: &Workload) -> String {
    let mut script = String::new();
    for op in &w.trace.ops {
        let command = if op.write {
            "write -q -P 0x5a"
        } else {
            "read -q"
        };
        script.push_str(&format!("{command} {} {}\n", op.offset, op.len));
    }
    script.push_str("quit\n");
    script
}

/// Reads a pipe to its end on a thread of its own, so the process can never block on it.
fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

fn replay(vm: &Vm, w: &Workload, t0: Instant, timeout: Duration) -> Result<Boot> {
    let script = replay_script(w);
    let mut cmd = in_node(&vm.netns, "qemu-io");
    cmd.arg("-f")
        .arg("qcow2")
        .arg(&vm.disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = t0.elapsed().as_secs_f64();
    let mut child = Reaped(cmd.spawn().context("cannot start qemu-io")?);
    let mut stdin = child.0.stdin.take().context("no stdin pipe")?;
    let feeder = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let out_reader = read_all(child.0.stdout.take().context("no stdout pipe")?);
    let err_reader = read_all(child.0.stderr.take().context("no stderr pipe")?);
    let status = child.wait(timeout)?;
    let end = t0.elapsed().as_secs_f64();
    let output = out_reader.join().unwrap_or_default();
    let errors = err_reader.join().unwrap_or_default();
    feeder.join().ok().transpose().context("feeding qemu-io")?;
    let failed = output
        .lines()
        .chain(errors.lines())
        .find(|l| l.contains("failed") || l.contains("rror"));
    if !status.success() || failed.is_some() {
        bail!("qemu-io ({status}): {}", failed.unwrap_or(errors.trim()));
    }
    Ok(Boot {
        vm: vm.name.clone(),
        node: vm.node.clone(),
        start,
        end,
        read_bytes: w.trace.read_bytes(),
    })
}
