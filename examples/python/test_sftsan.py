"""Tests of sftsan.py (the ctypes wrapper) and of the VDSM before_vm_start hook.

    cd examples/python
    SFTSAN_LIB=../../target/debug/libsftsan.so python3 -m unittest -v

Most tests need only the library: they open a spec of a cluster that is never brought up.
The tests that bring a real cluster up run when $SFTSAN_TEST_SPEC names the spec of a
scratch local cluster (its nodes and state may be created and removed; needs root, and
the sftsan binary in $SFTSAN_BIN or on PATH). sftsan-ffi/tests/python.rs runs them all.
"""

import ctypes
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import unittest
from xml.dom import minidom

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import sftsan  # noqa: E402
import vdsm_before_vm_start as hook  # noqa: E402

CLUSTER_SPEC = os.environ.get("SFTSAN_TEST_SPEC")

SAMPLE_DOMXML = """<?xml version="1.0" encoding="utf-8"?>
<domain type="kvm">
  <name>vm-17</name>
  <memory unit="MiB">512</memory>
  <devices>
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw"/>
      <source file="/iso/tools.iso"/>
      <target dev="hdc" bus="ide"/>
      <readonly/>
    </disk>
    <disk type="block" device="disk" snapshot="no">
      <driver name="qemu" type="raw" cache="none" io="native"/>
      <source dev="/dev/vg0/vm-17">
        <seclabel model="dac" relabel="no"/>
      </source>
      <backingStore/>
      <target dev="vda" bus="virtio"/>
      <serial>vm-17-root</serial>
    </disk>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/>
      <source file="/var/lib/data.qcow2"/>
      <target dev="vdb" bus="virtio"/>
    </disk>
  </devices>
</domain>
"""


def write_down_spec(directory, name="py-down"):
    """A valid local-mode spec (198.18.76.0/24) of a cluster the tests never bring up."""
    image = os.path.join(directory, "base.raw")
    with open(image, "wb") as f:
        f.write(b"\x5a" * (1 << 20))
    text = f"""
[cluster]
name = "{name}"
state_dir = "{os.path.join(directory, 'state')}"
mode = "local"
degree = 1

[image]
name = "base"
source = "{image}"

[origin]
name = "origin"
address = "198.18.76.1"

[cache]
size = "8MiB"

[snapshots]
per_node = 2

[local]
subnet = "198.18.76.0/24"

[[nodes]]
name = "n1"
address = "198.18.76.11"
"""
    path = os.path.join(directory, "spec.toml")
    with open(path, "w") as f:
        f.write(text)
    return path, text


class WrapperTests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.spec, self.toml = write_down_spec(self.dir.name)

    def tearDown(self):
        self.dir.cleanup()

    def test_version(self):
        self.assertRegex(sftsan.version(), r"^\d+\.\d+\.\d+")

    def test_a_missing_spec_raises_not_found_with_the_library_message(self):
        missing = os.path.join(self.dir.name, "nope.toml")
        with self.assertRaises(sftsan.NotFoundError) as caught:
            sftsan.Cluster(missing)
        e = caught.exception
        self.assertEqual(e.code, sftsan.Result.NOT_FOUND)
        self.assertEqual(e.name, "SFTSAN_RESULT_NOT_FOUND")
        self.assertEqual(e.function, "open_file")
        self.assertIn(f"cannot read the spec {missing}", e.message)
        self.assertIn(e.message, str(e))
        self.assertIsInstance(e, sftsan.SftsanError)
        self.assertIsInstance(e, LookupError)

    def test_an_invalid_spec_names_the_field(self):
        with self.assertRaises(sftsan.InvalidSpecError) as caught:
            sftsan.Cluster(toml=self.toml.replace("degree = 1", "degree = 0"))
        self.assertEqual(caught.exception.code, sftsan.Result.INVALID_SPEC)
        self.assertIn("cluster.degree", caught.exception.message)
        with self.assertRaises(sftsan.InvalidSpecError) as caught:
            sftsan.Cluster(toml="[cluster\n")
        self.assertIn("spec line 1", caught.exception.message)

    def test_invalid_utf8_and_null_arguments(self):
        with sftsan.Cluster(self.spec) as cluster:
            with self.assertRaises(sftsan.InvalidUtf8Error) as caught:
                cluster.snapshot_create(b"\xff", 1)
            self.assertIn("`node` is not valid UTF-8", caught.exception.message)
            with self.assertRaises(sftsan.NullArgumentError) as caught:
                cluster.snapshot_path(None, 1)
            self.assertEqual(caught.exception.code, sftsan.Result.NULL_ARGUMENT)
            self.assertIn("`node` is NULL", caught.exception.message)
        with self.assertRaises(sftsan.InvalidUtf8Error):
            sftsan.Cluster(b"/tmp/\xff.toml")
        lib = sftsan.load_library()
        self.assertEqual(lib.sftsan_up(None), sftsan.Result.NULL_ARGUMENT)
        self.assertEqual(sftsan.last_error(), "argument `ctx` is NULL")
        out = ctypes.c_void_p()
        self.assertEqual(lib.sftsan_ctx_open_file(None, ctypes.byref(out)), 1)
        self.assertIsNone(out.value, "outputs are written only on success")

    def test_freeing_null_is_a_no_op(self):
        lib = sftsan.load_library()
        lib.sftsan_ctx_free(None)
        lib.sftsan_string_free(None)
        cluster = sftsan.Cluster(self.spec)
        cluster.close()
        cluster.close()
        self.assertTrue(cluster.closed)
        with self.assertRaises(ValueError):
            cluster.plan()

    def test_a_down_cluster(self):
        with sftsan.Cluster(self.spec) as cluster:
            plan = cluster.plan()
            self.assertEqual(plan["cluster"], "py-down")
            self.assertEqual(cluster.node_names(), ["origin", "n1"])
            states = [n["state"] for n in cluster.status()["nodes"]]
            self.assertEqual(states, ["down", "down"])
            with self.assertRaises(sftsan.NotUpError) as caught:
                cluster.snapshot_path("n1", 1)
            self.assertEqual(caught.exception.code, sftsan.Result.NOT_UP)
            self.assertIn('node "n1" of cluster py-down is not up', caught.exception.message)
            with self.assertRaises(sftsan.NotUpError):
                cluster.verify(1)
            with self.assertRaises(sftsan.NotFoundError) as caught:
                cluster.snapshot_path("n7", 1)
            self.assertIn('no node named "n7"', caught.exception.message)
            with self.assertRaises(sftsan.InvalidArgumentError) as caught:
                cluster.snapshot_create("origin", 1)
            self.assertIn("is the origin", caught.exception.message)

    def test_domain_xml_needs_no_running_cluster(self):
        import xml.etree.ElementTree as ET
        with sftsan.Cluster(self.spec) as cluster:
            domain = ET.fromstring(cluster.domain_xml("n1", 2, stateless=True))
            self.assertEqual(domain.findtext("name"), "py-down-n1-2")
            source = domain.find("devices/disk/source").get("file")
            self.assertTrue(source.endswith("/nodes/n1/snapshots/base-2.qcow2"), source)
            meta = domain.find("metadata/{https://sftsan.org/xmlns/domain/1}vm")
            self.assertEqual(meta.get("mode"), "stateless")
            self.assertEqual(meta.get("spec"), os.path.abspath(self.spec))
            again = ET.fromstring(cluster.domain_xml("n1", 2, stateless=True))
            self.assertEqual(domain.findtext("uuid"), again.findtext("uuid"))
            with self.assertRaises(sftsan.InvalidArgumentError) as caught:
                cluster.domain_xml("n1", 1, template="<not-a-domain/>")
            self.assertIn("template", caught.exception.message)
            with self.assertRaises(sftsan.NotFoundError):
                cluster.domain_xml("n9", 1)

    def test_the_last_error_is_per_thread(self):
        with sftsan.Cluster(self.spec) as cluster:
            with self.assertRaises(sftsan.NotUpError):
                cluster.snapshot_path("n1", 1)
            mine = sftsan.last_error()
            seen = []

            def other():
                seen.append(sftsan.last_error())
                sftsan.load_library().sftsan_down(None)
                seen.append(sftsan.last_error())

            t = threading.Thread(target=other)
            t.start()
            t.join()
            self.assertEqual(seen, ["", "argument `ctx` is NULL"])
            self.assertEqual(sftsan.last_error(), mine)
            cluster.plan()
            self.assertEqual(sftsan.last_error(), "", "a success clears it")

    def test_progress_callback_can_be_set_and_cleared(self):
        with sftsan.Cluster(self.spec) as cluster:
            cluster.set_progress(lambda *step: None)
            cluster.set_progress(None)


class FakeCluster:
    """Stands in for sftsan.Cluster in the hook's tests."""

    calls = []

    def __init__(self, spec):
        self.spec = spec

    def snapshot_create(self, node, index):
        FakeCluster.calls.append((self.spec, node, index))
        return f"/state/nodes/{node}/snapshots/base-{index}.qcow2"

    def close(self):
        FakeCluster.calls.append("close")


class HookTests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.domxml = os.path.join(self.dir.name, "domxml")
        with open(self.domxml, "w") as f:
            f.write(SAMPLE_DOMXML)
        FakeCluster.calls = []

    def tearDown(self):
        self.dir.cleanup()

    def env(self, **extra):
        env = {"_hook_domxml": self.domxml, "sftsan_spec": "/etc/sftsan/c.toml"}
        env.update(extra)
        return env

    def disks(self):
        doc = minidom.parse(self.domxml)
        found = {}
        for disk in doc.getElementsByTagName("disk"):
            target = disk.getElementsByTagName("target")[0].getAttribute("dev")
            found[target] = disk
        return found

    def test_points_the_first_disk_at_the_snapshot(self):
        stderr = io.StringIO()
        code = hook.main(
            self.env(sftsan_node="n2", sftsan_index="7"), FakeCluster, stderr=stderr
        )
        self.assertEqual(code, 0, stderr.getvalue())
        self.assertEqual(FakeCluster.calls, [("/etc/sftsan/c.toml", "n2", 7), "close"])
        disks = self.disks()
        vda = disks["vda"]
        self.assertEqual(vda.getAttribute("type"), "file")
        self.assertEqual(vda.getAttribute("device"), "disk")
        driver = vda.getElementsByTagName("driver")[0]
        self.assertEqual(driver.getAttribute("type"), "qcow2")
        self.assertEqual(driver.getAttribute("cache"), "none", "other driver options stay")
        source = vda.getElementsByTagName("source")[0]
        self.assertEqual(source.getAttribute("file"), "/state/nodes/n2/snapshots/base-7.qcow2")
        self.assertFalse(source.hasAttribute("dev"))
        self.assertEqual(len(source.getElementsByTagName("seclabel")), 1)
        self.assertEqual(vda.getElementsByTagName("backingStore"), [])
        self.assertEqual(
            vda.getElementsByTagName("serial")[0].firstChild.data, "vm-17-root"
        )
        # The cdrom and the second disk are untouched.
        self.assertEqual(
            disks["hdc"].getElementsByTagName("source")[0].getAttribute("file"),
            "/iso/tools.iso",
        )
        self.assertEqual(
            disks["vdb"].getElementsByTagName("source")[0].getAttribute("file"),
            "/var/lib/data.qcow2",
        )
        self.assertIn("disk -> /state/nodes/n2/snapshots/base-7.qcow2", stderr.getvalue())

    def test_a_named_disk_and_the_default_node(self):
        code = hook.main(
            self.env(sftsan_index="3", sftsan_disk="vdb"), FakeCluster, stderr=io.StringIO()
        )
        self.assertEqual(code, 0)
        node = FakeCluster.calls[0][1]
        self.assertTrue(node and "." not in node, node)
        disks = self.disks()
        self.assertEqual(disks["vda"].getElementsByTagName("source")[0].getAttribute("dev"),
                         "/dev/vg0/vm-17")
        self.assertEqual(
            disks["vdb"].getElementsByTagName("source")[0].getAttribute("file"),
            f"/state/nodes/{node}/snapshots/base-3.qcow2",
        )

    def test_a_vm_without_sftsan_properties_is_left_alone(self):
        self.assertEqual(hook.main({"_hook_domxml": self.domxml}, FakeCluster), 0)
        self.assertEqual(FakeCluster.calls, [])
        with open(self.domxml) as f:
            self.assertEqual(f.read(), SAMPLE_DOMXML)

    def test_bad_properties_stop_the_vm(self):
        stderr = io.StringIO()
        code = hook.main(self.env(sftsan_index="seven"), FakeCluster, stderr=stderr)
        self.assertEqual(code, hook.FATAL)
        self.assertIn("sftsan_index must be a number", stderr.getvalue())
        code = hook.main(self.env(sftsan_index="1", sftsan_disk="vdz"), FakeCluster,
                         stderr=stderr)
        self.assertEqual(code, hook.FATAL)
        self.assertEqual(FakeCluster.calls, [])
        with open(self.domxml) as f:
            self.assertEqual(f.read(), SAMPLE_DOMXML)

    def test_a_library_error_stops_the_vm_with_its_message(self):
        spec, _ = write_down_spec(self.dir.name)
        stderr = io.StringIO()
        code = hook.main(
            self.env(sftsan_spec=spec, sftsan_node="n9", sftsan_index="1"), stderr=stderr
        )
        self.assertEqual(code, hook.FATAL)
        self.assertIn('no node named "n9" in cluster py-down', stderr.getvalue())
        self.assertIn("SFTSAN_RESULT_NOT_FOUND", stderr.getvalue())
        with open(self.domxml) as f:
            self.assertEqual(f.read(), SAMPLE_DOMXML)


@unittest.skipUnless(CLUSTER_SPEC, "SFTSAN_TEST_SPEC (a scratch local cluster's spec) is not set")
class RealClusterTests(unittest.TestCase):
    """Bring a real cluster up and down through the wrapper, and run the hook on it."""

    def test_up_snapshots_and_down(self):
        steps = []
        with sftsan.Cluster(CLUSTER_SPEC, down_on_exit=True) as cluster:
            cluster.set_progress(lambda *step: steps.append(step))
            names = cluster.node_names()
            node = names[1]
            cluster.up()
            self.assertIn(("cluster/bridge", "created"), [s[:2] for s in steps])
            self.assertTrue(all(isinstance(s[2], float) for s in steps))
            states = {n["name"]: n["state"] for n in cluster.status()["nodes"]}
            self.assertEqual(set(states.values()), {"up"}, states)
            results = cluster.verify(1)
            self.assertEqual(len(results), len(names) - 1)
            self.assertTrue(all(r["error"] is None for r in results), results)

            first = cluster.snapshot_path(node, 1)
            self.assertTrue(os.path.isfile(first), first)
            path = cluster.snapshot_create(node, 11)
            self.assertTrue(os.path.isfile(path), path)
            self.assertEqual(cluster.snapshot_path(node, 11), path)
            info = json.loads(
                subprocess.run(
                    ["qemu-img", "info", "-U", "--output=json", path],
                    check=True, capture_output=True, text=True,
                ).stdout
            )
            self.assertEqual(info["format"], "qcow2")
            self.assertIn("nbd", info.get("backing-filename", ""))
            self.assertTrue(cluster.snapshot_remove(node, 11))
            self.assertFalse(cluster.snapshot_remove(node, 11))
            with self.assertRaises(sftsan.NotFoundError):
                cluster.snapshot_path(node, 11)
            # A parent with a child up cannot go.
            if len(names) > 2:
                with self.assertRaises(sftsan.BusyError) as caught:
                    cluster.down(node)
                self.assertIn("still serves", caught.exception.message)
        with sftsan.Cluster(CLUSTER_SPEC) as cluster:
            states = {n["state"] for n in cluster.status()["nodes"]}
            self.assertEqual(states, {"down"})

    def test_the_hook_on_a_real_cluster(self):
        with tempfile.TemporaryDirectory() as d, sftsan.Cluster(CLUSTER_SPEC) as cluster:
            node = cluster.node_names()[-1]
            domxml = os.path.join(d, "domxml")
            with open(domxml, "w") as f:
                f.write(SAMPLE_DOMXML)
            env = dict(os.environ, _hook_domxml=domxml, sftsan_spec=CLUSTER_SPEC,
                       sftsan_node=node, sftsan_index="4", PYTHONDONTWRITEBYTECODE="1")
            try:
                run = subprocess.run(
                    [sys.executable, os.path.join(HERE, "vdsm_before_vm_start.py")],
                    env=env, capture_output=True, text=True, timeout=300,
                )
                self.assertEqual(run.returncode, 0, run.stderr)
                path = cluster.snapshot_path(node, 4)
                doc = minidom.parse(domxml)
                vda = hook.find_disk(doc)
                self.assertEqual(vda.getElementsByTagName("source")[0].getAttribute("file"), path)
                self.assertIn(f"disk -> {path}", run.stderr)
                # Only the node and its ancestors came up.
                parents = {n["name"]: n["parent"] for n in cluster.plan()["nodes"]}
                path, at = set(), node
                while at is not None:
                    path.add(at)
                    at = parents[at]
                states = {n["name"]: n["state"] for n in cluster.status()["nodes"]}
                for name, state in states.items():
                    self.assertEqual(state, "up" if name in path else "down", name)
            finally:
                cluster.down()


if __name__ == "__main__":
    unittest.main()
