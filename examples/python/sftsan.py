"""sftsan for Python: a ctypes wrapper of libsftsan (the C ABI in include/sftsan.h).

    import sftsan

    with sftsan.Cluster("/etc/sftsan/cluster.toml") as cluster:
        print(cluster.plan()["nodes"][0]["name"])
        cluster.up()
        disk = cluster.snapshot_create("n1", 7)   # a VM's copy-on-write disk
        print(cluster.status())

Every failure raises SftsanError (or a subclass per result code) carrying the code and
the library's message. JSON results come back parsed.

The library is loaded from $SFTSAN_LIB (a path), else from beside this module, else by
the dynamic loader's search (LD_LIBRARY_PATH, ld.so.cache). Bringing nodes up starts one
cache keeper per node, which is the `sftsan` program: since the running executable is
Python, the library finds it through $SFTSAN_BIN, else on PATH.

Threads: a Cluster may be used from one thread at a time; calls release the GIL while
the library works. Operations on one cluster are serialized across processes by its
state lock (a second one fails at once with BusyError).
"""

import ctypes
import enum
import json
import os

__all__ = [
    "Result",
    "SftsanError",
    "NullArgumentError",
    "InvalidUtf8Error",
    "InvalidSpecError",
    "EngineError",
    "NotFoundError",
    "NotUpError",
    "PanicError",
    "InvalidArgumentError",
    "BusyError",
    "Cluster",
    "load_library",
    "version",
]


class Result(enum.IntEnum):
    """sftsan_result: what a call did (values as in sftsan.h)."""

    OK = 0
    NULL_ARGUMENT = 1
    INVALID_UTF8 = 2
    INVALID_SPEC = 3
    ENGINE_FAILURE = 4
    NOT_FOUND = 5
    NOT_UP = 6
    PANIC = 7
    INVALID_ARGUMENT = 8
    BUSY = 9


class SftsanError(Exception):
    """A failed call: `code` (a Result, or an int the wrapper does not know), `name`
    (e.g. "SFTSAN_RESULT_NOT_UP"), `message` (the library's), `function` (which call)."""

    def __init__(self, code, message, function=None):
        try:
            code = Result(code)
        except ValueError:
            pass
        self.code = code
        self.name = _library().sftsan_result_name(int(code)).decode()
        self.message = message
        self.function = function
        where = f"{function}: " if function else ""
        super().__init__(f"{where}{message} [{self.name}]")


class NullArgumentError(SftsanError, ValueError):
    pass


class InvalidUtf8Error(SftsanError, ValueError):
    pass


class InvalidSpecError(SftsanError, ValueError):
    pass


class EngineError(SftsanError):
    pass


class NotFoundError(SftsanError, LookupError):
    pass


class NotUpError(SftsanError):
    pass


class PanicError(SftsanError):
    pass


class InvalidArgumentError(SftsanError, ValueError):
    pass


class BusyError(SftsanError):
    pass


_ERRORS = {
    Result.NULL_ARGUMENT: NullArgumentError,
    Result.INVALID_UTF8: InvalidUtf8Error,
    Result.INVALID_SPEC: InvalidSpecError,
    Result.ENGINE_FAILURE: EngineError,
    Result.NOT_FOUND: NotFoundError,
    Result.NOT_UP: NotUpError,
    Result.PANIC: PanicError,
    Result.INVALID_ARGUMENT: InvalidArgumentError,
    Result.BUSY: BusyError,
}

LIBRARY_NAME = "libsftsan.so"

# void (*)(void *userdata, const char *id, const char *action, double seconds, bool rollback)
PROGRESS = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_double, ctypes.c_bool
)

_lib = None


def load_library(path=None):
    """Loads libsftsan (once) and declares its functions; returns the ctypes handle.
    `path`, else $SFTSAN_LIB, else libsftsan.so beside this module, else the loader's
    default search."""
    global _lib
    if _lib is not None and path is None:
        return _lib
    candidates = [path, os.environ.get("SFTSAN_LIB")]
    beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY_NAME)
    if os.path.exists(beside):
        candidates.append(beside)
    candidates.append(LIBRARY_NAME)
    chosen = next(c for c in candidates if c)
    lib = ctypes.CDLL(chosen)
    _declare(lib)
    _lib = lib
    return lib


def _library():
    return _lib if _lib is not None else load_library()


def _declare(lib):
    P = ctypes.c_void_p  # sftsan_ctx *, and char * the library returns (freed by us)
    S = ctypes.c_char_p  # const char * we pass in
    R = ctypes.c_uint32  # sftsan_result
    OUT = ctypes.POINTER(ctypes.c_void_p)
    signatures = {
        "sftsan_version": (S, []),
        "sftsan_result_name": (S, [ctypes.c_uint32]),
        "sftsan_last_error": (ctypes.c_size_t, [ctypes.c_char_p, ctypes.c_size_t]),
        "sftsan_string_free": (None, [P]),
        "sftsan_ctx_open_file": (R, [S, OUT]),
        "sftsan_ctx_open_toml": (R, [S, OUT]),
        "sftsan_ctx_free": (None, [P]),
        "sftsan_ctx_set_progress": (R, [P, PROGRESS, P]),
        "sftsan_plan_json": (R, [P, OUT]),
        "sftsan_status_json": (R, [P, OUT]),
        "sftsan_node_name": (R, [P, ctypes.c_size_t, OUT]),
        "sftsan_up": (R, [P]),
        "sftsan_up_node": (R, [P, S]),
        "sftsan_down": (R, [P]),
        "sftsan_down_node": (R, [P, S]),
        "sftsan_snapshot_create": (R, [P, S, ctypes.c_uint32, OUT]),
        "sftsan_snapshot_remove": (R, [P, S, ctypes.c_uint32, ctypes.POINTER(ctypes.c_bool)]),
        "sftsan_snapshot_path": (R, [P, S, ctypes.c_uint32, OUT]),
        "sftsan_verify_json": (R, [P, ctypes.c_uint32, OUT]),
        "sftsan_domain_xml": (R, [P, S, ctypes.c_uint32, S, ctypes.c_bool, OUT]),
    }
    for name, (restype, argtypes) in signatures.items():
        f = getattr(lib, name)
        f.restype = restype
        f.argtypes = argtypes


def version():
    """The library's version, e.g. "0.1.0"."""
    return _library().sftsan_version().decode()


def last_error():
    """The message of this thread's most recent failed call ("" after a success)."""
    lib = _library()
    length = lib.sftsan_last_error(None, 0)
    buf = ctypes.create_string_buffer(length + 1)
    lib.sftsan_last_error(buf, len(buf))
    return buf.value.decode("utf-8", errors="replace")


def _check(result, function):
    if result != Result.OK:
        cls = _ERRORS.get(result, SftsanError)
        raise cls(result, last_error(), function)


def _arg(value):
    """A str argument as UTF-8; bytes pass as they are (the library checks them); None
    passes as NULL (the library refuses it)."""
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _take_string(pointer):
    """The text of a string the library returned; frees it."""
    try:
        return ctypes.string_at(pointer.value).decode("utf-8")
    finally:
        _library().sftsan_string_free(pointer)


class Cluster:
    """A cluster spec opened in libsftsan: `Cluster(path)` or `Cluster(toml=text)`.

    Use it as a context manager, or call close(); closing frees the handle and leaves the
    cluster as it is (with `down_on_exit=True`, leaving the `with` block takes it down).
    """

    def __init__(self, spec_path=None, *, toml=None, down_on_exit=False):
        if (spec_path is None) == (toml is None):
            raise TypeError("give a spec path or toml=, not both")
        lib = _library()
        self._lib = lib
        self._ctx = ctypes.c_void_p()
        self._progress = None  # keeps the ctypes callback alive while it is set
        self.down_on_exit = down_on_exit
        if toml is not None:
            _check(lib.sftsan_ctx_open_toml(_arg(toml), ctypes.byref(self._ctx)), "open_toml")
        else:
            path = os.fspath(spec_path) if not isinstance(spec_path, bytes) else spec_path
            _check(lib.sftsan_ctx_open_file(_arg(path), ctypes.byref(self._ctx)), "open_file")

    # Handle lifetime

    def close(self):
        """Frees the handle (idempotent). The cluster stays as it is."""
        if self._ctx:
            self._lib.sftsan_ctx_free(self._ctx)
            self._ctx = ctypes.c_void_p()
            self._progress = None

    @property
    def closed(self):
        return not self._ctx

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            if self.down_on_exit and self._ctx:
                self.down()
        finally:
            self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _handle(self):
        if not self._ctx:
            raise ValueError("the Cluster is closed")
        return self._ctx

    def _string_call(self, function, *args):
        out = ctypes.c_void_p()
        f = getattr(self._lib, "sftsan_" + function)
        _check(f(self._handle(), *args, ctypes.byref(out)), function)
        return _take_string(out)

    # Reading

    def plan(self):
        """The tree and every node's stack (dict, as `sftsan plan --json`)."""
        return json.loads(self._string_call("plan_json"))

    def status(self):
        """Per node: state, cache fill, traffic, snapshots (dict, as `sftsan status --json`)."""
        return json.loads(self._string_call("status_json"))

    def node_names(self):
        """Every node's name in tree order, the origin first."""
        names = []
        position = 1
        while True:
            try:
                names.append(self._string_call("node_name", position))
            except NotFoundError:
                return names
            position += 1

    def snapshot_path(self, node, index):
        """The file of an existing snapshot; NotUpError when the node is down."""
        return self._string_call("snapshot_path", _arg(node), index)

    def domain_xml(self, node, index, template=None, stateless=False):
        """The libvirt domain XML of VM `index` on `node`, as `sftsan vm define` makes it:
        from `template` (domain XML; its boot disk, if any, gets the VM's snapshot) or the
        built-in default."""
        template = None if template is None else _arg(template)
        return self._string_call("domain_xml", _arg(node), index, template, bool(stateless))

    def verify(self, index=1):
        """Every node reads snapshot `index` through its cache and compares it with the
        image; returns the per-node results (list). EngineError when one differs."""
        return json.loads(self._string_call("verify_json", index))

    # Changing

    def up(self, node=None):
        """Brings the cluster up, or only `node` and its ancestors."""
        if node is None:
            _check(self._lib.sftsan_up(self._handle()), "up")
        else:
            _check(self._lib.sftsan_up_node(self._handle(), _arg(node)), "up_node")

    def down(self, node=None):
        """Takes the cluster down, or only `node` (BusyError while its children are up)."""
        if node is None:
            _check(self._lib.sftsan_down(self._handle()), "down")
        else:
            _check(self._lib.sftsan_down_node(self._handle(), _arg(node)), "down_node")

    def snapshot_create(self, node, index):
        """Makes sure snapshot `index` of `node` exists (bringing the node up if needed);
        returns its file: a qcow2 overlay, a VM's disk."""
        return self._string_call("snapshot_create", _arg(node), index)

    def snapshot_remove(self, node, index):
        """Removes a snapshot (the VM's writes are lost); returns whether there was one."""
        existed = ctypes.c_bool(False)
        _check(
            self._lib.sftsan_snapshot_remove(
                self._handle(), _arg(node), index, ctypes.byref(existed)
            ),
            "snapshot_remove",
        )
        return existed.value

    def set_progress(self, callback):
        """Calls callback(id, action, seconds, rollback) for every step up, down and the
        snapshot calls take (from the library's worker threads, one at a time);
        None removes it. An exception in the callback is printed and ignored."""
        if callback is None:
            c_callback = PROGRESS()
        else:

            def trampoline(_userdata, resource, action, seconds, rollback):
                callback(resource.decode(), action.decode(), seconds, bool(rollback))

            c_callback = PROGRESS(trampoline)
        _check(
            self._lib.sftsan_ctx_set_progress(self._handle(), c_callback, None),
            "set_progress",
        )
        self._progress = c_callback if callback is not None else None
