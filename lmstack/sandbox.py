"""Run untrusted Python in a child process that can touch nothing but a temporary folder.

Layers, each enough to stop the obvious and together hard to get around:
- a fresh temporary folder as the working directory, `$HOME` and `$TMPDIR`, deleted afterwards;
- `python -I -S`: no user site-packages, no environment variables, no `site` imports;
- resource limits: CPU seconds, address space (memory), size of files written;
- a wall-clock timeout, after which the child's whole process group is killed;
- where the kernel allows it, a new empty network namespace (no interface but a down loopback);
- inside the child, an audit hook (PEP 578) installed before the user's code runs, refusing
  sockets, new processes, `ctypes`, and any file access outside the temporary folder except
  reading the standard library.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass

# Runs in the child before the user's code (passed as argv[1]); it is the only code not audited.
_BOOTSTRAP = r'''
import os, sys
_work = os.path.realpath(os.getcwd())
_read_only = tuple(os.path.realpath(p) for p in sys.argv[2:])
_blocked = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
            "os.forkpty", "ctypes.", "os.kill", "os.killpg", "pty.", "gc.get_referrers",
            "os.putenv", "os.unsetenv", "resource.setrlimit", "signal.")
_listing_events = ("os.listdir", "os.scandir", "glob.glob")  # the import system lists the stdlib folders
_changing_events = ("os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.chdir", "os.chmod", "os.chown", "os.link",
                    "os.symlink", "os.truncate", "os.utime", "shutil.rmtree")

def _inside(path, roots):
    try:
        real = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return any(real == root or real.startswith(root + os.sep) for root in roots)

def _audit(event, args):
    if event.startswith(_blocked) and event != "socket.getdefaulttimeout":
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
        path, mode, flags = args
        if path is None or isinstance(path, int):
            return
        writing = (mode and any(c in str(mode) for c in "wax+")) or (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if _inside(path, (_work,)) or (not writing and _inside(path, _read_only)):
            return
        raise PermissionError(f"sandbox: no access to {os.fsdecode(path)} (only the working folder)")
    if event in _listing_events or event in _changing_events:
        roots = (_work,) if event in _changing_events else (_work, *_read_only)
        for arg in args:
            if isinstance(arg, (str, bytes, os.PathLike)) and not _inside(arg, roots):
                raise PermissionError(f"sandbox: no access to {os.fsdecode(arg)} (only the working folder)")

sys.addaudithook(_audit)
del _audit
exec(compile(sys.argv[1], "<sandbox>", "exec"), {"__name__": "__main__"})
'''

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int | None  # None when the run was killed for time
    timed_out: bool
    isolated_network: bool  # whether a network namespace was in force (the audit hook applies anyway)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def report(self, limit: int = 4000) -> str:
        """What an agent sees: output, or the error and why the run ended."""
        if self.timed_out:
            return "error: the code ran past its time limit and was stopped"
        text = self.stdout if self.ok else f"{self.stdout}\nerror (exit {self.returncode}):\n{self.stderr}"
        text = text.strip() or "(no output; print what you want to see)"
        return text if len(text) <= limit else text[:limit] + "\n... (output cut)"


def _new_network_namespace() -> bool:
    """Enter a new network namespace (as root, or through a user namespace); False if not allowed."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
    return libc.unshare(flags) == 0


def run_python(code: str, *, timeout: float = 10.0, memory_mb: int = 512, max_output: int = 1 << 20,
               isolate_network: bool = True) -> SandboxResult:
    """Run `code` under the sandbox; its stdout/stderr (cut at `max_output` bytes) and how it ended."""
    workdir = tempfile.mkdtemp(prefix="lmstack-sandbox-")
    stdlib = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib")}
    stdlib |= {os.path.join(path, "lib-dynload") for path in stdlib}

    def limit_child() -> None:
        os.setsid()  # its own process group, killed as one on timeout
        cpu = int(timeout) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if isolate_network:
            _new_network_namespace()  # best effort; the audit hook refuses sockets regardless

    env = {"HOME": workdir, "TMPDIR": workdir, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    command = [sys.executable, "-I", "-S", "-c", _BOOTSTRAP, code, *sorted(stdlib)]
    try:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, preexec_fn=limit_child)
        try:
            out, err = process.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            timed_out = True
        cpu_killed = process.returncode in (-signal.SIGXCPU, -signal.SIGKILL) and not timed_out
        return SandboxResult(
            stdout=out[:max_output].decode("utf-8", "replace"), stderr=err[-max_output:].decode("utf-8", "replace"),
            returncode=None if timed_out else process.returncode, timed_out=timed_out or cpu_killed,
            isolated_network=_namespace_worked(isolate_network),
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _namespace_worked(requested: bool) -> bool:
    """Whether a child can enter a network namespace here (checked once, in a throwaway child)."""
    if not requested:
        return False
    global _NAMESPACE_OK
    if _NAMESPACE_OK is None:
        pid = os.fork()
        if pid == 0:  # the child tries and reports through its exit code
            os._exit(0 if _new_network_namespace() else 1)
        _NAMESPACE_OK = os.waitpid(pid, 0)[1] == 0
    return _NAMESPACE_OK


_NAMESPACE_OK: bool | None = None
