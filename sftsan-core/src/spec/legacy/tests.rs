use super::*;

/// cfg.data as a working installation of the original sftsan left it: its README's, with
/// `cacheoridev` on line 14 (the degree line is separated from its comment by tabs).
const SEED_CFG: &str = include_str!("../../../../examples/legacy/cfg.data");

const NODES: &str = "192.168.0.153\n192.168.0.154\n192.168.0.155\n";

/// The smallest complete cfg.data.
const MINIMAL: &str = "\
imagename=img
imagedev=/dev/vg/img
imagenode=10.0.0.1
numsnap=3
degree=2
cachesize=1024
";

fn import(cfg: &str) -> Result<Imported, LegacyError> {
    import_legacy(cfg, "10.0.0.2\n", None, LegacyMode::Remote)
}

fn import_err(cfg: &str) -> String {
    import(cfg).unwrap_err().to_string()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn warned_keys(imported: &Imported) -> Vec<&str> {
    imported.warnings.iter().map(|w| w.key.as_str()).collect()
}

#[test]
fn converts_the_original_cfg_data() {
    let imported = import_legacy(SEED_CFG, NODES, None, LegacyMode::Remote).unwrap();
    assert_eq!(warned_keys(&imported), ["vgname", "cacheloopdev"]);
    assert_eq!(
        imported.warnings[1].to_string(),
        "cfg.data line 10: cacheloopdev: a fixed loop device for the cache; sftsan attaches \
         free loop devices itself; ignored"
    );
    let spec = imported.spec;
    assert_eq!(spec.cluster.name, "ubuntu12");
    assert_eq!(spec.cluster.state_dir, Path::new("/root/sftsan/"));
    assert_eq!(spec.cluster.backend, Backend::Kernel);
    let kernel = spec
        .kernel
        .as_ref()
        .expect("a kernel cluster gets a [kernel] section");
    assert_eq!(kernel.chap_secret.len(), 24, "a generated CHAP secret");
    assert!(!kernel.open_access);
    // Each node a host of its own, reached as root (the scripts ran `ssh root@node`).
    assert_eq!(spec.cluster.mode, Mode::Remote);
    let hosts: Vec<String> = spec
        .ssh_hosts()
        .iter()
        .map(|(n, d)| format!("{n}={d}"))
        .collect();
    assert_eq!(
        hosts,
        [
            "origin=root@192.168.0.152",
            "node2=root@192.168.0.153",
            "node3=root@192.168.0.154",
            "node4=root@192.168.0.155"
        ]
    );
    super::super::check_rules(&spec).expect("an imported spec keeps every rule");
    assert_eq!(spec.cluster.degree, 1);
    assert_eq!(spec.cluster.port, super::super::DEFAULT_PORT);
    assert_eq!(spec.image.name, "ubuntu12");
    assert_eq!(spec.image.source, Path::new("/dev/mapper/vgdata-lvimage1"));
    assert_eq!(spec.image.size, None);
    assert_eq!(spec.origin.name, "origin");
    assert_eq!(spec.origin.address, ip("192.168.0.152"));
    assert!(spec.origin.managed);
    let nodes: Vec<(&str, IpAddr)> = spec
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.address))
        .collect();
    assert_eq!(
        nodes,
        [
            ("node2", ip("192.168.0.153")),
            ("node3", ip("192.168.0.154")),
            ("node4", ip("192.168.0.155")),
        ]
    );
    assert_eq!(spec.cache.size, ByteSize(4096 << 20));
    assert_eq!(spec.cache.dir, None);
    assert_eq!(spec.snapshots.per_node, 2);
    assert_eq!(spec.snapshots.kind, SnapshotKind::DmSnapshot);
    assert_eq!(spec.local, None);

    let back = ClusterSpec::from_toml(&spec.to_toml()).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn cacheoridev_is_every_kernel_hosts_cache_device() {
    let cfg = SEED_CFG;
    let imported = import_legacy(cfg, NODES, None, LegacyMode::Remote).unwrap();
    assert_eq!(warned_keys(&imported), ["vgname", "cacheloopdev"]);
    assert!(imported
        .spec
        .nodes
        .iter()
        .all(|n| n.devices.cache.as_deref() == Some(Path::new("/dev/vgdata/lvcache"))));
    // All nodes on this host: one node can have it.
    let imported = import_legacy(cfg, "192.168.0.153\n", None, LegacyMode::Host).unwrap();
    assert_eq!(warned_keys(&imported), ["vgname", "cacheloopdev"]);
    assert_eq!(
        imported.spec.nodes[0].devices.cache.as_deref(),
        Some(Path::new("/dev/vgdata/lvcache"))
    );
    // Several nodes on one host cannot share it: their caches stay files, and it says so.
    let imported = import_legacy(cfg, NODES, None, LegacyMode::Host).unwrap();
    assert!(imported.spec.nodes.iter().all(|n| n.devices.is_empty()));
    assert!(
        imported.warnings[2]
            .reason
            .contains("all 3 nodes on one host"),
        "{}",
        imported.warnings[2]
    );
    // qcow2 caches are files.
    let qcow = cfg.replace("snaptype=$dmsnap", "snaptype=$qcsnap");
    let imported = import_legacy(&qcow, "192.168.0.153\n", None, LegacyMode::Remote).unwrap();
    assert!(imported.spec.nodes[0].devices.is_empty());
    assert_eq!(
        warned_keys(&imported),
        ["vgname", "cacheloopdev", "cacheoridev"]
    );
    let err = import_legacy(
        &cfg.replace("/dev/vgdata/lvcache", "lvcache"),
        NODES,
        None,
        LegacyMode::Remote,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cfg.data line 14: cacheoridev: \"lvcache\" is not an absolute path"
    );
}

#[test]
fn keys_without_a_use_are_warned_about_once() {
    let cfg = format!("{MINIMAL}vmcount=4\nLANG=C\nvmcount=5\nexport PATH=/sbin:$PATH\n");
    let imported = import(&cfg).unwrap();
    let shown: Vec<String> = imported.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        shown,
        [
            "cfg.data line 7: vmcount: not a setting of the original sftsan; ignored",
            "cfg.data line 8: LANG: not a setting of the original sftsan; ignored",
            "cfg.data line 10: PATH: not a setting of the original sftsan; ignored",
        ]
    );
}

#[test]
fn state_dir_argument_replaces_workdir() {
    let spec = import_legacy(
        SEED_CFG,
        NODES,
        Some(Path::new("/srv/sftsan")),
        LegacyMode::Remote,
    )
    .unwrap()
    .spec;
    assert_eq!(spec.cluster.state_dir, Path::new("/srv/sftsan"));
}

#[test]
fn state_dir_defaults_to_var_lib_without_workdir() {
    let spec = import(MINIMAL).unwrap().spec;
    assert_eq!(spec.cluster.state_dir, Path::new("/var/lib/sftsan/img"));
    assert!(import(MINIMAL).unwrap().warnings.is_empty());
}

#[test]
fn snaptype_selects_backend_and_kind() {
    for (lines, backend, kind) in [
        ("", Backend::Userspace, SnapshotKind::Qcow2),
        ("snaptype=$qcsnap", Backend::Userspace, SnapshotKind::Qcow2),
        ("snaptype=qcsnap", Backend::Userspace, SnapshotKind::Qcow2),
        (
            "qcsnap=qcsnap\nsnaptype=\"${qcsnap}\"",
            Backend::Userspace,
            SnapshotKind::Qcow2,
        ),
        (
            "dmsnap=dmsnap\nsnaptype=$dmsnap",
            Backend::Kernel,
            SnapshotKind::DmSnapshot,
        ),
        (
            "snaptype=dmsnap # dm",
            Backend::Kernel,
            SnapshotKind::DmSnapshot,
        ),
        // The scripts compare values: what dmsnap holds is what counts.
        (
            "dmsnap=dm\nqcsnap=qc\nsnaptype=$dmsnap",
            Backend::Kernel,
            SnapshotKind::DmSnapshot,
        ),
        (
            "dmsnap=dm\nqcsnap=qc\nsnaptype=qc",
            Backend::Userspace,
            SnapshotKind::Qcow2,
        ),
    ] {
        let spec = import(&format!("{MINIMAL}{lines}\n")).unwrap().spec;
        assert_eq!(
            (spec.cluster.backend, spec.snapshots.kind),
            (backend, kind),
            "{lines}"
        );
    }
}

#[test]
fn unknown_snaptype_is_rejected() {
    let err = import_err(&format!("{MINIMAL}thin=thin\nsnaptype=$thin\n"));
    assert_eq!(
        err,
        "cfg.data line 8: snaptype: \"thin\" is neither $dmsnap nor $qcsnap"
    );
    let err = import_err(&format!("{MINIMAL}snaptype=$nothing\n"));
    assert_eq!(
        err,
        "cfg.data line 7: snaptype: \"$nothing\": $nothing is not set in cfg.data; write the value out"
    );
}

#[test]
fn line_without_assignment_is_rejected() {
    let err = import_err(&format!("{MINIMAL}source ./common.sh\n"));
    assert_eq!(
        err,
        "cfg.data line 7: expected key=value, got \"source ./common.sh\""
    );
    let err = import_err("=x\n");
    assert_eq!(err, "cfg.data line 1: expected key=value, got \"=x\"");
}

#[test]
fn missing_required_keys_are_named() {
    for key in [
        "imagename",
        "imagedev",
        "imagenode",
        "numsnap",
        "degree",
        "cachesize",
    ] {
        let cfg: String = MINIMAL
            .lines()
            .filter(|line| !line.starts_with(&format!("{key}=")))
            .map(|line| format!("{line}\n"))
            .collect();
        let err = import_err(&cfg);
        assert_eq!(err, format!("cfg.data: required key {key:?} is missing"));
    }
}

#[test]
fn bad_numbers_name_key_and_line() {
    let err = import_err(&MINIMAL.replace("numsnap=3", "numsnap=three"));
    assert_eq!(
        err,
        "cfg.data line 4: numsnap: \"three\" is not a whole number"
    );
    let err = import_err(&MINIMAL.replace("degree=2", "degree=-1"));
    assert_eq!(err, "cfg.data line 5: degree: \"-1\" is not a whole number");
    let err = import_err(&MINIMAL.replace("cachesize=1024", "cachesize=4G"));
    assert_eq!(
        err,
        "cfg.data line 6: cachesize: \"4G\" is not a whole number"
    );
}

#[test]
fn huge_cachesize_is_rejected() {
    let err = import_err(&MINIMAL.replace("cachesize=1024", "cachesize=18446744073709551615"));
    assert_eq!(
        err,
        "cfg.data line 6: cachesize: 18446744073709551615 MiB is too large"
    );
}

#[test]
fn bad_imagenode_is_rejected() {
    let err = import_err(&MINIMAL.replace("imagenode=10.0.0.1", "imagenode=storage1"));
    assert_eq!(
        err,
        "cfg.data line 3: imagenode: \"storage1\" is not an IP address"
    );
}

#[test]
fn empty_value_is_rejected() {
    let err = import_err(&MINIMAL.replace("imagedev=/dev/vg/img", "imagedev= # none"));
    assert_eq!(err, "cfg.data line 2: imagedev: is empty");
}

#[test]
fn invalid_imagename_is_rejected() {
    let err = import_err(&MINIMAL.replace("imagename=img", "imagename=\"my img\""));
    assert!(
        err.starts_with("cfg.data line 1: imagename: \"my img\" contains ' '"),
        "{err}"
    );
    let err = import_err(&MINIMAL.replace("imagename=img", "imagename=.img"));
    assert_eq!(
        err,
        "cfg.data line 1: imagename: \".img\" must not start with '.' or '-'"
    );
}

#[test]
fn long_imagename_is_cut_for_the_cluster_name() {
    let cfg = MINIMAL.replace("imagename=img", "imagename=ubuntu-12.04-server-amd64");
    let spec = import(&cfg).unwrap().spec;
    assert_eq!(spec.image.name, "ubuntu-12.04-server-amd64");
    assert_eq!(spec.cluster.name, "ubuntu-12.04-ser");
    assert_eq!(spec.cluster.name.len(), CLUSTER_NAME_MAX);
}

#[test]
fn variables_of_earlier_lines_expand_and_commands_do_not() {
    let cfg = MINIMAL.replace(
        "imagedev=/dev/vg/img",
        "vgname=vg0\nimagedev=/dev/$vgname/img",
    );
    let spec = import(&cfg).unwrap().spec;
    assert_eq!(spec.image.source, Path::new("/dev/vg0/img"));
    let err = import_err(&format!("{MINIMAL}workdir=`pwd`\n"));
    assert_eq!(
        err,
        "cfg.data line 7: workdir: \"`pwd`\": `pwd` needs the shell to run it; write the value out"
    );
    let err = import_err(&MINIMAL.replace("/dev/vg/img", "/dev/$vgname/img"));
    assert_eq!(
        err,
        "cfg.data line 2: imagedev: \"/dev/$vgname/img\": $vgname is not set in cfg.data; \
         write the value out"
    );
}

#[test]
fn later_assignments_win() {
    let spec = import(&format!("{MINIMAL}degree=5\n")).unwrap().spec;
    assert_eq!(spec.cluster.degree, 5);
}

#[test]
fn nodes_file_skips_blanks_comments_crlf_and_trailing_spaces() {
    let nodes = "# compute nodes\r\n\r\n10.0.0.2 \r\n  10.0.0.3  # rack 2\r\n\nfd00::4\t\n10.0.0.5 10.0.0.6\n";
    let spec = import_legacy(MINIMAL, nodes, None, LegacyMode::Remote)
        .unwrap()
        .spec;
    let names: Vec<&str> = spec.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node2", "node3", "node4", "node5", "node6"]);
    assert_eq!(spec.nodes[1].address, ip("10.0.0.3"));
    assert_eq!(spec.nodes[2].address, ip("fd00::4"));
    assert_eq!(spec.nodes[4].address, ip("10.0.0.6"));
}

#[test]
fn bad_nodes_name_their_line() {
    let err = |nodes: &str| {
        import_legacy(MINIMAL, nodes, None, LegacyMode::Remote)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("10.0.0.2\n\nnode3.example\n"),
        "nodes line 3: \"node3.example\" is not an IP address"
    );
    assert_eq!(
        err("10.0.0.2\n10.0.0.3\n10.0.0.2\n"),
        "nodes line 3: 10.0.0.2 is already listed on line 1"
    );
    assert_eq!(
        err("10.0.0.1\n"),
        "nodes line 1: 10.0.0.1 is imagenode, the origin"
    );
    assert_eq!(
        err("# none yet\n\n"),
        "nodes: no compute node (one IP address per line)"
    );
}

#[test]
fn imported_spec_passes_validation_once_the_image_exists() {
    let image = tempfile::NamedTempFile::new().unwrap();
    image.as_file().set_len(1 << 20).unwrap();
    let cfg = MINIMAL.replace("/dev/vg/img", &image.path().display().to_string());
    let spec = import_legacy(&cfg, NODES, None, LegacyMode::Remote)
        .unwrap()
        .spec;
    let validated = super::super::validate(spec).unwrap();
    assert_eq!(validated.image_size(), 1 << 20);
}
