#!/usr/bin/python3
"""VDSM before_vm_start hook: boots the VM from its sftsan snapshot.

VDSM runs the executables in /usr/libexec/vdsm/hooks/before_vm_start/ before it hands a
domain to libvirt. Each reads the domain XML from the file named by $_hook_domxml, may
change it and writes it back; the VM's custom properties arrive as environment variables.
This hook reads three of them:

    sftsan_spec    the cluster spec (TOML) on this host; without it the hook does nothing
    sftsan_node    the sftsan node this host is (default: the host's short name)
    sftsan_index   the VM's snapshot number on that node (from 1)
    sftsan_disk    optional: the target dev (e.g. "vda") of the disk to replace; default
                   the domain's first <disk device="disk">

It asks libsftsan for the snapshot (creating it, and bringing the node up, if needed)
and points the disk at it: type="file", <source file="SNAPSHOT"/>, driver type qcow2 (the
snapshot is a qcow2 overlay whose backing file is the node's NBD export).

Install:
    install -m 755 vdsm_before_vm_start.py /usr/libexec/vdsm/hooks/before_vm_start/50_sftsan
    install -m 644 sftsan.py /usr/libexec/vdsm/hooks/before_vm_start/
    # libsftsan.so beside sftsan.py, on the loader's path, or named by SFTSAN_LIB;
    # the sftsan binary on PATH or named by SFTSAN_BIN (it runs the cache keepers).
and let oVirt pass the properties, e.g.
    engine-config -s "UserDefinedVMProperties=sftsan_spec=^/.*$;sftsan_node=^[A-Za-z0-9._-]+$;sftsan_index=^[0-9]+$"

Exit codes follow VDSM's hook convention: 0 done (or nothing to do), 2 a fatal error
that stops the VM from starting (it would boot from the wrong disk otherwise).
"""

import os
import socket
import sys
from xml.dom import minidom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FATAL = 2


def read_domxml(path):
    return minidom.parse(path)


def write_domxml(document, path):
    with open(path, "wb") as f:
        f.write(document.toxml(encoding="utf-8"))


def _children(element, tag):
    return [c for c in element.childNodes if c.nodeType == c.ELEMENT_NODE and c.tagName == tag]


def find_disk(document, target=None):
    """The <disk device="disk"> to replace: the one whose <target dev> is `target`, else
    the first. None when there is none."""
    for disk in document.getElementsByTagName("disk"):
        if disk.getAttribute("device") not in ("", "disk"):
            continue
        if target is None:
            return disk
        if any(t.getAttribute("dev") == target for t in _children(disk, "target")):
            return disk
    return None


def point_disk_at(document, disk, path):
    """Makes `disk` a qcow2 file disk whose source is `path`."""
    disk.setAttribute("type", "file")
    drivers = _children(disk, "driver")
    if drivers:
        driver = drivers[0]
    else:
        driver = document.createElement("driver")
        driver.setAttribute("name", "qemu")
        disk.insertBefore(driver, disk.firstChild)
    driver.setAttribute("type", "qcow2")
    sources = _children(disk, "source")
    if sources:
        source = sources[0]
        for extra in sources[1:]:
            disk.removeChild(extra)
        # A block, network or volume source's attributes and hosts do not apply to a file.
        for attribute in ("dev", "name", "protocol", "pool", "volume", "dir"):
            if source.hasAttribute(attribute):
                source.removeAttribute(attribute)
        for host in _children(source, "host"):
            source.removeChild(host)
    else:
        source = document.createElement("source")
        disk.insertBefore(source, driver.nextSibling)
    source.setAttribute("file", path)
    # The snapshot's backing chain is in its qcow2 header; an old one must not linger.
    for backing in _children(disk, "backingStore"):
        disk.removeChild(backing)


def main(environ=None, open_cluster=None, stderr=None):
    """Runs the hook; returns its exit code. `open_cluster(spec)` returns an object with
    snapshot_create(node, index) and close() (default: sftsan.Cluster)."""
    environ = os.environ if environ is None else environ
    stderr = sys.stderr if stderr is None else stderr

    def fail(message):
        print(f"sftsan hook: {message}", file=stderr)
        return FATAL

    spec = environ.get("sftsan_spec")
    if not spec:
        return 0  # not an sftsan VM
    domxml = environ.get("_hook_domxml")
    if not domxml:
        return fail("_hook_domxml is not set: not run by VDSM?")
    node = environ.get("sftsan_node") or socket.gethostname().split(".")[0]
    try:
        index = int(environ.get("sftsan_index", ""))
    except ValueError:
        return fail(f"sftsan_index must be a number, not {environ.get('sftsan_index')!r}")
    try:
        document = read_domxml(domxml)
    except Exception as e:  # noqa: BLE001 - any parse failure stops the VM
        return fail(f"cannot read the domain XML {domxml}: {e}")
    disk = find_disk(document, environ.get("sftsan_disk") or None)
    if disk is None:
        return fail("the domain has no disk to put the snapshot on")

    if open_cluster is None:
        import sftsan

        open_cluster = sftsan.Cluster
    try:
        cluster = open_cluster(spec)
        try:
            path = cluster.snapshot_create(node, index)
        finally:
            cluster.close()
    except Exception as e:  # noqa: BLE001 - sftsan.SftsanError, or the library missing
        return fail(f"snapshot {index} of node {node}: {e}")

    point_disk_at(document, disk, path)
    write_domxml(document, domxml)
    print(f"sftsan hook: disk -> {path} (node {node}, snapshot {index})", file=stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
