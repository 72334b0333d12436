//! Separate hosts on one machine, for remote-mode tests: each host is a network namespace
//! with mount and UTS namespaces of its own, running a real OpenSSH server on its address.
//! The controller (the test, in the root namespace) reaches a host only by SSH to that
//! address over a bridge; nothing runs through `ip netns exec`.
//!
//! Addresses: hosts at `198.18.<subnet>.1`, `.2`, ... on a /25; the bridge (the
//! controller's side) at `.126`. An `unreachable` route for the whole /24 goes in first,
//! so nothing of the test subnet can leave through the default route.

use std::ffi::CString;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::MutexGuard;
use std::time::Duration;

use tempfile::TempDir;

use super::{checked, eventually, exclusive, require_root_with};

/// One host: its namespace, address, server and private directory.
pub struct Host {
    /// The host's name, also its hostname inside (`h1`, `h2`, ...).
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its address, where its sshd listens.
    pub address: Ipv4Addr,
    /// Its own files: host key, sshd config and log, state.
    pub dir: PathBuf,
    /// Environment its sshd gives every session (sshd_config SetEnv).
    pub session_env: Vec<(String, String)>,
    sshd: Option<Child>,
}

impl Host {
    /// The host's sshd log (LogLevel VERBOSE: one "Accepted publickey" line per connection).
    pub fn sshd_log(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    /// How many SSH connections the host's sshd has accepted so far.
    pub fn connections(&self) -> usize {
        fs::read_to_string(self.sshd_log())
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }

    /// Its public host key file.
    pub fn host_key_pub(&self) -> PathBuf {
        self.dir.join("host_key.pub")
    }
}

/// A set of hosts and the keys to reach them; [`Drop`] removes everything it made.
pub struct TestHosts {
    prefix: String,
    subnet: String,
    bridge: String,
    /// The private (0700) directory of keys, configs and the hosts' directories.
    pub dir: TempDir,
    /// The hosts, in order.
    pub hosts: Vec<Host>,
    /// Paths every host sees privately (its own copy under its directory).
    private_paths: Vec<PathBuf>,
    _exclusive: MutexGuard<'static, ()>,
}

impl TestHosts {
    /// `count` hosts in `198.18.<subnet>.0/24`. Each directory named in `private` (made
    /// under [`TestHosts::dir`]) is a host's own there: bind-mounted from its directory,
    /// so that what a host writes there stays its own, as on separate machines.
    pub fn new(prefix: &str, subnet: u8, count: usize, private: &[&str]) -> TestHosts {
        require_root_with(&["ip", "ssh", "ssh-keygen", "sshd"]);
        assert!(count <= 120, "hosts sit in a /25");
        let guard = exclusive();
        let dir = tempfile::Builder::new()
            .prefix("sftsan-hosts.")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let mut set = TestHosts {
            prefix: prefix.into(),
            subnet: format!("198.18.{subnet}.0/24"),
            bridge: format!("{prefix}br"),
            dir,
            hosts: vec![],
            private_paths: vec![],
            _exclusive: guard,
        };
        set.private_paths = private.iter().map(|p| set.dir.path().join(p)).collect();
        for p in &set.private_paths {
            fs::create_dir_all(p).unwrap();
        }
        set.network(subnet, count);
        set.keys();
        for i in 0..count {
            set.start(i);
        }
        set
    }

    /// The private key the controller logs in with.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// The guard route first, then the bridge and one namespace with a veth per host.
    fn network(&mut self, subnet: u8, count: usize) {
        ip(&["route", "add", "unreachable", &self.subnet]);
        ip(&["link", "add", &self.bridge, "type", "bridge"]);
        let controller = format!("198.18.{subnet}.126/25");
        ip(&["addr", "add", &controller, "dev", &self.bridge]);
        ip(&["link", "set", &self.bridge, "up"]);
        for i in 0..count {
            let name = format!("h{}", i + 1);
            let netns = format!("{}-{name}", self.prefix);
            let outside = format!("{}v{}", self.prefix, i + 1);
            let inside = format!("{}p{}", self.prefix, i + 1);
            let address = Ipv4Addr::new(198, 18, subnet, i as u8 + 1);
            ip(&["netns", "add", &netns]);
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            ip(&["link", "set", &inside, "netns", &netns]);
            ip(&["link", "set", &outside, "master", &self.bridge, "up"]);
            let inns = |args: &[&str]| {
                let mut all = vec!["-n", netns.as_str()];
                all.extend_from_slice(args);
                ip(&all);
            };
            inns(&["addr", "add", &format!("{address}/25"), "dev", &inside]);
            inns(&["link", "set", &inside, "up"]);
            inns(&["link", "set", "lo", "up"]);
            let dir = self.dir.path().join(&name);
            fs::create_dir(&dir).unwrap();
            self.hosts.push(Host {
                name,
                netns,
                address,
                dir,
                session_env: vec![],
                sshd: None,
            });
        }
    }

    /// The controller's key, each host's key, and who may log in.
    fn keys(&self) {
        let client = self.client_key();
        keygen(&client);
        fs::copy(
            client.with_extension("pub"),
            self.dir.path().join("authorized_keys"),
        )
        .unwrap();
        for host in &self.hosts {
            keygen(&host.dir.join("host_key"));
        }
    }

    /// Replaces host `i`'s key and restarts its sshd: a host that was reinstalled, or
    /// one someone impersonates.
    pub fn change_host_key(&mut self, i: usize) {
        self.stop(i);
        let key = self.hosts[i].dir.join("host_key");
        fs::remove_file(&key).unwrap();
        fs::remove_file(key.with_extension("pub")).unwrap();
        keygen(&key);
        self.start(i);
    }

    /// Restarts host `i`'s sshd so that every session there gets `env` (a test's fault
    /// injection reaching the host's sftsan).
    pub fn set_session_env(&mut self, i: usize, env: &[(&str, &str)]) {
        self.stop(i);
        self.hosts[i].session_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.start(i);
    }

    /// Starts host `i`'s sshd in the host's namespaces, and waits until it accepts.
    pub fn start(&mut self, i: usize) {
        let config = self.sshd_config(i);
        let host = &self.hosts[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(host.sshd_log())
            .unwrap();
        let enter = Enter::new(host, &self.private_paths);
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: `enter` only makes syscalls on memory prepared before the fork.
        unsafe { cmd.pre_exec(move || enter.apply()) };
        let child = cmd.spawn().expect("sshd");
        let addr = SocketAddr::from((host.address, 22));
        let listening = eventually(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        self.hosts[i].sshd = Some(child);
        assert!(
            listening,
            "sshd of {} does not listen on {addr}",
            self.hosts[i].name
        );
    }

    /// `program` run inside host `i`'s namespaces (as a process of that host), for what a
    /// test does on a host itself, e.g. what libvirt there would run.
    pub fn in_host(&self, i: usize, program: &Path) -> Command {
        let pid = self.hosts[i]
            .sshd
            .as_ref()
            .expect("the host is running")
            .id();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &pid.to_string(), "-n", "-m", "-u", "--"])
            .arg(program);
        cmd
    }

    /// Names of the processes running in host `i`'s network namespace.
    pub fn processes(&self, i: usize) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.hosts[i].netns])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).ok())
            .map(|comm| comm.trim().to_string())
            .collect()
    }

    /// `qemu-img compare FLAGS -f raw IMAGE DISK` on host `i`: reads `disk` as the host's
    /// VMs do (its backing through the node's local socket), against the raw `image`.
    pub fn compare_on_host(
        &self,
        i: usize,
        flags: &[&str],
        image: &Path,
        disk: &Path,
    ) -> std::process::Output {
        self.in_host(i, Path::new("qemu-img"))
            .arg("compare")
            .args(flags)
            .args(["-f", "raw"])
            .arg(image)
            .arg(disk)
            .output()
            .unwrap()
    }

    /// Runs `program ARGS` on host `i` (see [`TestHosts::in_host`]) with `input` on its
    /// standard input, and returns its output.
    pub fn run_in_host(
        &self,
        i: usize,
        program: &Path,
        args: &[&str],
        input: &[u8],
    ) -> std::process::Output {
        use std::io::Write;
        let mut child = self
            .in_host(i, program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// A remote-mode spec for these hosts: the first is the origin (serving `image`), the
    /// others are `n1`, `n2`, ... (degree 2), with the state in `<dir>/state`, logging in
    /// as root with the test's key, running `program`; `ssh_extra` adds lines to `[ssh]`.
    pub fn remote_spec(
        &self,
        name: &str,
        image: &Path,
        per_node: u32,
        program: &str,
        ssh_extra: &str,
    ) -> String {
        let dir = self.dir.path();
        let mut text = format!(
            "[cluster]\nname = \"{name}\"\nstate_dir = \"{state}\"\nmode = \"remote\"\ndegree = 2\n\
             [image]\nname = \"base\"\nsource = \"{image}\"\n\
             [origin]\naddress = \"{origin}\"\n\
             [cache]\nsize = \"32MiB\"\n\
             [snapshots]\nper_node = {per_node}\n\
             [ssh]\nuser = \"root\"\nidentity_file = \"{key}\"\nknown_hosts = \"{known}\"\n\
             program = \"{program}\"\nconnect_timeout_s = 3\n{ssh_extra}",
            state = dir.join("state").display(),
            image = image.display(),
            origin = self.hosts[0].address,
            key = self.client_key().display(),
            known = dir.join("known_hosts").display(),
        );
        for (i, host) in self.hosts.iter().enumerate().skip(1) {
            text += &format!(
                "[[nodes]]\nname = \"n{i}\"\naddress = \"{}\"\n",
                host.address
            );
        }
        text
    }

    /// Stops host `i`'s sshd and every process in its namespace (sessions included).
    pub fn stop(&mut self, i: usize) {
        let host = &mut self.hosts[i];
        if let Some(mut child) = host.sshd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_netns_processes(&host.netns);
    }

    fn sshd_config(&self, i: usize) -> PathBuf {
        let host = &self.hosts[i];
        let path = host.dir.join("sshd_config");
        let mut text = format!(
            "ListenAddress {address}\n\
             Port 22\n\
             HostKey {key}\n\
             AuthorizedKeysFile {authorized}\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             PidFile none\n\
             LogLevel VERBOSE\n\
             MaxSessions 64\n",
            address = host.address,
            key = host.dir.join("host_key").display(),
            authorized = self.dir.path().join("authorized_keys").display(),
        );
        for (k, v) in &host.session_env {
            text += &format!("SetEnv {k}={v}\n");
        }
        fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        // Every host's processes first: connections between hosts then close while both
        // ends live, and no socket keeps a deleted namespace (and its veth) alive.
        for i in 0..self.hosts.len() {
            self.stop(i);
        }
        for host in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "delete", &host.netns])
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .status();
        let _ = Command::new("ip")
            .args(["route", "delete", "unreachable", &self.subnet])
            .status();
    }
}

/// What a host's processes enter between fork and exec: its network namespace, then new
/// mount and UTS namespaces with a private /run, its own copies of the private paths and
/// its hostname. Everything is prepared before the fork: the child only makes syscalls.
struct Enter {
    netns: CString,
    hostname: Vec<u8>,
    /// (source, target) bind mounts.
    binds: Vec<(CString, CString)>,
}

impl Enter {
    fn new(host: &Host, private_paths: &[PathBuf]) -> Enter {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
        let binds = private_paths
            .iter()
            .enumerate()
            .map(|(n, target)| {
                let source = host.dir.join(format!("private{n}"));
                fs::create_dir_all(&source).unwrap();
                (c(&source), c(target))
            })
            .collect();
        Enter {
            netns: c(&Path::new("/var/run/netns").join(&host.netns)),
            hostname: host.name.as_bytes().to_vec(),
            binds,
        }
    }

    fn apply(&self) -> std::io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        let none = std::ptr::null();
        // SAFETY: every pointer is a NUL-terminated string that outlives the calls.
        unsafe {
            let fd = libc::open(self.netns.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            check(libc::setns(fd, libc::CLONE_NEWNET))?;
            libc::close(fd);
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            check(libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                c"/run".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"mode=0755".as_ptr().cast(),
            ))?;
            // sshd's privilege separation directory.
            check(libc::mkdir(c"/run/sshd".as_ptr(), 0o755))?;
            for (source, target) in &self.binds {
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    none,
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
            check(libc::sethostname(
                self.hostname.as_ptr().cast(),
                self.hostname.len(),
            ))?;
        }
        Ok(())
    }
}

fn ip(args: &[&str]) {
    checked(Command::new("ip").args(args));
}

fn keygen(path: &Path) {
    checked(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "sftsan-test", "-f"])
            .arg(path),
    );
}

/// Kills every process in network namespace `netns` and waits until none is left.
fn kill_netns_processes(netns: &str) {
    let pids = || -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", netns])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    for pid in pids() {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(
        eventually(Duration::from_secs(10), || pids().is_empty()),
        "processes left in {netns}: {:?}",
        pids()
    );
}

// ---------------------------------------------------------------------------------------
// A host's own libvirtd, for remote VM tests.
//
// A host that runs VMs gets virtlogd and libvirtd inside its sshd's namespaces (network,
// mount, UTS): the controller's qemu+ssh sessions (sshd runs virt-ssh-helper there), the
// daemons, the sftsan hook they run and the guests then share one /run and one state
// directory, as on a machine of their own. libvirt's directories are the host's own
// (`<host dir>/libvirt/{etc,lib,log,cache}` bind-mounted over /etc/libvirt,
// /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt in that mount namespace only;
// /run/libvirt is in the host's private /run): Debian's defaults (QEMU runs as
// libvirt-qemu), no networks, no private /dev per guest, the hook as hooks/qemu.d/sftsan,
// and /dev/kvm hidden (an empty 0600 file over it), since guests hang under KVM here and
// libvirt would re-probe QEMU on every define (see sftsan-libvirt's tests/common). The
// daemons are processes of the host's network namespace, so [`TestHosts::stop`] (and
// [`Drop`]) ends them and every guest with the rest; [`TestHosts::stop_libvirtd`] stops
// them the orderly way first (guests destroyed through libvirt, then the daemons).

impl TestHosts {
    /// Host `i`'s libvirt directory (etc, lib, log, cache and the daemons' pid files), as
    /// the controller sees it.
    pub fn libvirt_dir(&self, i: usize) -> PathBuf {
        self.hosts[i].dir.join("libvirt")
    }

    /// Starts virtlogd and libvirtd on host `i` with `hook` (sftsan-hook) installed, and
    /// waits until libvirtd answers there. Also lets other users traverse (not list)
    /// [`TestHosts::dir`]: QEMU, as libvirt-qemu, opens VM disks in the hosts' private
    /// directories below it.
    pub fn start_libvirtd(&self, i: usize, hook: &Path) {
        require_root_with(&[
            "libvirtd",
            "virtlogd",
            "virsh",
            "nsenter",
            "qemu-system-x86_64",
        ]);
        fs::set_permissions(self.dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
        let root = self.libvirt_dir(i);
        for d in ["etc/hooks/qemu.d", "lib", "log", "cache"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let etc = root.join("etc");
        let link = etc.join("hooks/qemu.d/sftsan");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(hook, &link).unwrap();
        fs::write(etc.join("qemu.conf"), "namespaces = []\n").unwrap();
        fs::write(
            etc.join("libvirtd.conf"),
            "log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n",
        )
        .unwrap();
        let script = r#"
            R=$1
            mount --bind "$R/etc" /etc/libvirt
            mount --bind "$R/lib" /var/lib/libvirt
            mount --bind "$R/log" /var/log/libvirt
            mount --bind "$R/cache" /var/cache/libvirt
            if [ -e /dev/kvm ]; then
                : > "$R/no-kvm"; chmod 600 "$R/no-kvm"
                mount --bind "$R/no-kvm" /dev/kvm
            fi
            virtlogd -d -p "$R/virtlogd.pid"
            libvirtd -d -p "$R/libvirtd.pid"
        "#;
        let path = std::env::var("PATH").unwrap_or_default();
        checked(
            self.in_host(i, Path::new("/bin/sh"))
                .args(["-ec", script, "sh"])
                .arg(&root)
                .env("PATH", format!("{path}:/usr/local/sbin:/usr/sbin:/sbin")),
        );
        let answers = eventually(Duration::from_secs(30), || {
            self.virsh(i, &["uri"]).status.success()
        });
        assert!(
            answers,
            "libvirtd of {} does not answer: {}",
            self.hosts[i].name,
            self.libvirt_log(i)
        );
    }

    /// `virsh -c qemu:///system ARGS` as host `i` itself runs it.
    pub fn virsh(&self, i: usize, args: &[&str]) -> std::process::Output {
        self.in_host(i, Path::new("virsh"))
            .args(["-q", "-c", "qemu:///system"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run virsh")
    }

    /// The last lines of host `i`'s libvirtd log and sftsan hook log, for failure messages.
    pub fn libvirt_log(&self, i: usize) -> String {
        let tail = |name: &str| {
            let text =
                fs::read_to_string(self.libvirt_dir(i).join("log").join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        format!(
            "--- {} libvirtd.log (tail)\n{}\n--- sftsan-hook.log (tail)\n{}",
            self.hosts[i].name,
            tail("libvirtd.log"),
            tail("sftsan-hook.log")
        )
    }

    /// Stops host `i`'s guests (destroyed through libvirt), then libvirtd and virtlogd,
    /// and waits until they are gone. Does nothing where none runs.
    pub fn stop_libvirtd(&self, i: usize) {
        let root = self.libvirt_dir(i);
        let pid = |name: &str| -> Option<i32> {
            fs::read_to_string(root.join(name))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let Some(libvirtd) = pid("libvirtd.pid") else {
            return;
        };
        if !super::process_gone(libvirtd) {
            let running = self.virsh(i, &["list", "--name"]);
            for name in super::stdout(&running).split_whitespace() {
                let _ = self.virsh(i, &["destroy", name]);
            }
        }
        for p in [Some(libvirtd), pid("virtlogd.pid")].into_iter().flatten() {
            if super::process_gone(p) {
                continue;
            }
            // SAFETY: kill has no memory preconditions; the pid is a daemon of this host.
            unsafe { libc::kill(p, libc::SIGTERM) };
            if !eventually(Duration::from_secs(10), || super::process_gone(p)) {
                // SAFETY: as above.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
    }
}
