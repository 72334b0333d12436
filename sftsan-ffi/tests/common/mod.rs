//! Shared by sftsan-ffi's integration tests: the built artifacts (libsftsan.so / .a, the
//! sftsan binary), the linker flags of the static library, SKIPPED messages, and specs of
//! clusters that are never brought up.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("sftsan-ffi lives in the workspace")
}

/// What the tests run against, built once per test process.
pub struct Artifacts {
    /// target/<profile>: libsftsan.so, libsftsan.a, sftsan.
    pub dir: PathBuf,
    /// The system libraries the static library needs, as `-l` flags.
    pub static_libs: Vec<String>,
}

impl Artifacts {
    pub fn shared_lib(&self) -> PathBuf {
        self.dir.join("libsftsan.so")
    }
    pub fn static_lib(&self) -> PathBuf {
        self.dir.join("libsftsan.a")
    }
    pub fn sftsan_bin(&self) -> PathBuf {
        self.dir.join("sftsan")
    }
}

/// Builds libsftsan (shared and static) and the `sftsan` binary with cargo, into the
/// target directory this test binary lives in (target/<profile>/deps/..).
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binaries live in target/<profile>/deps")
            .to_path_buf();
        let target = dir.parent().expect("target/<profile>").to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "sftsan-ffi", "-p", "sftsan-cli"])
            .args(["--message-format=json", "--target-dir"])
            .arg(&target)
            .current_dir(workspace());
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("cannot run cargo");
        assert!(
            out.status.success(),
            "cargo build -p sftsan-ffi -p sftsan-cli failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Native libraries of -sys crates (e.g. devmapper), then Rust's std on Linux.
        let mut static_libs: Vec<String> = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if msg["reason"] != "build-script-executed" {
                continue;
            }
            for lib in msg["linked_libs"].as_array().into_iter().flatten() {
                let lib = lib.as_str().unwrap_or_default();
                let name = lib.rsplit('=').next().unwrap_or(lib);
                let flag = format!("-l{name}");
                if !static_libs.contains(&flag) {
                    static_libs.push(flag);
                }
            }
        }
        static_libs.extend(
            [
                "-lgcc_s",
                "-lutil",
                "-lrt",
                "-lpthread",
                "-lm",
                "-ldl",
                "-lc",
            ]
            .map(String::from),
        );
        let artifacts = Artifacts { dir, static_libs };
        for f in [
            artifacts.shared_lib(),
            artifacts.static_lib(),
            artifacts.sftsan_bin(),
        ] {
            assert!(f.is_file(), "{} was not built", f.display());
        }
        artifacts
    })
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// Fails unless every program is installed (scripts/install-deps.sh installs them): a
/// missing tool is a failure, never a skip.
pub fn require_tools(tools: &[&str]) {
    if let Some(t) = tools.iter().find(|t| !on_path(t)) {
        panic!("{t} is not installed (scripts/install-deps.sh installs it)");
    }
}

/// Compiles a C program against the committed header and one of the libraries.
pub fn compile_c(source: &Path, output: &Path, link: Link) -> Output {
    let a = artifacts();
    let mut cmd = Command::new("gcc");
    cmd.args([
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Wpedantic",
        "-Werror",
        "-g",
    ])
    .arg("-I")
    .arg(workspace().join("include"))
    .arg("-o")
    .arg(output)
    .arg(source);
    match link {
        Link::Shared => {
            cmd.arg("-L")
                .arg(&a.dir)
                .arg("-lsftsan")
                .arg(format!("-Wl,-rpath,{}", a.dir.display()));
        }
        Link::Static => {
            cmd.arg(a.static_lib()).args(&a.static_libs);
        }
    }
    // The static library links pthread; the C programs may use it too.
    cmd.arg("-lpthread");
    let out = cmd.output().expect("cannot run gcc");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Shared,
    Static,
}

/// Runs `valgrind` with the leak and error checks the tests require: exit 99 on any
/// invalid access or definite leak.
pub fn valgrind() -> Command {
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--leak-check=full",
        "--error-exitcode=99",
        "--errors-for-leak-kinds=definite",
        "--quiet",
    ]);
    cmd
}

/// A valid local-mode spec (subnet 198.18.75.0/24) of a cluster these tests never bring
/// up, with its 1 MiB image, in `dir`; returns the spec's path.
pub fn down_cluster_spec(dir: &Path) -> PathBuf {
    let image = dir.join("base.raw");
    std::fs::write(&image, vec![0x5a; 1 << 20]).unwrap();
    let text = format!(
        "[cluster]\nname = \"ffi-down\"\nstate_dir = {state:?}\nmode = \"local\"\ndegree = 1\n\n\
         [image]\nname = \"base\"\nsource = {image:?}\n\n\
         [origin]\nname = \"origin\"\naddress = \"198.18.75.1\"\n\n\
         [cache]\nsize = \"8MiB\"\n\n[snapshots]\nper_node = 2\n\n\
         [local]\nsubnet = \"198.18.75.0/24\"\n\n\
         [[nodes]]\nname = \"n1\"\naddress = \"198.18.75.11\"\n",
        state = dir.join("state"),
        image = image,
    );
    let spec = dir.join("spec.toml");
    std::fs::write(&spec, text).unwrap();
    spec
}
