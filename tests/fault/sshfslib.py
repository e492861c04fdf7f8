# SPDX-License-Identifier: Apache-2.0
"""A real network filesystem for the fault suites: sshfs to a private sshd.

    server = SshServer(tmpdir)          # sshd on 127.0.0.1:<free port>
    server.start()
    mnt = SshfsMount(server, "/exported/dir", "/local/mountpoint")
    mnt.mount()
    ... server.kill_sessions()          # the connection dies; sshfs reconnects
    ... server.stall() / server.resume()  # SIGSTOP / SIGCONT the sessions
    mnt.unmount(); server.stop()

The sshd is this test's alone: its own sshd_config, throwaway host and
user keys, all in a temporary directory; it listens on 127.0.0.1 only, on
a free high port, as a foreground child (-D) of the test; public-key login
only (root too, since the suites run as root), no PAM, no password. No
system file is read or written, except that sshd insists on its privilege
separation directory (/run/sshd), which is created when missing (empty,
root-owned; Debian's ssh.service makes the same). The ssh client reads no
user or system configuration (-F /dev/null) and checks the host key
against a known_hosts file of its own.

Every object registers its stop with atexit as well, so that a test that
dies between start and cleanup leaves no daemon and no mount behind:
SshfsMount.unmount and SshServer.stop may be called any number of times,
in any state (a stalled server is resumed before it is killed).

SshfsCase (a faultlib.FaultCase) exports cls.export over sshfs at
cls.remote for each test class, and skips the class (exit 77 when no test
ran) where sshd, sshfs or ssh-keygen is missing: see skip_reason().
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import faultlib
from faultlib import mounted

SSHD = shutil.which("sshd", path=os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"]))
SSHFS = shutil.which("sshfs")
SSH_KEYGEN = shutil.which("ssh-keygen")

START_TIMEOUT = 15.0


def skip_reason():
    """Why sshfs on loopback cannot run here (the suite exits 77), or None.
    Debian: apt-get install openssh-server sshfs (tools/deps.sh does)."""
    for what, path in (("sshd (openssh-server)", SSHD), ("sshfs", SSHFS),
                       ("ssh-keygen (openssh-client)", SSH_KEYGEN)):
        if path is None:
            return "%s is not installed" % what
    return None


def _ppid(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            # comm may hold spaces and parentheses: split after the last ')'
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def descendants(pid):
    """Pids of every process below @pid (children first), from /proc."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            parent = _ppid(int(name))
            if parent is not None:
                children.setdefault(parent, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _signal_all(pids, sig):
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def read_text(path):
    """The text of the file at @path, or "" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def free_port():
    """A TCP port of 127.0.0.1 free right now (the kernel's ephemeral
    range: high). sshd may still lose it to a race: start() retries."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SshServer:
    """A private sshd on 127.0.0.1 serving sftp for the current user."""

    def __init__(self, parent_dir):
        self.dir = tempfile.mkdtemp(prefix="sshd-", dir=parent_dir)
        self.user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
        self.port = None
        self.proc = None
        self.stalled = []
        self.log = os.path.join(self.dir, "sshd.log")
        self.host_key = os.path.join(self.dir, "host_ed25519")
        self.user_key = os.path.join(self.dir, "user_ed25519")
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        atexit.register(self.stop)

    def _keygen(self, path):
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "stfs-test",
                        "-f", path], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _write_config(self):
        cfg = os.path.join(self.dir, "sshd_config")
        with open(cfg, "w") as f:
            f.write("\n".join([
                "Port %d" % self.port,
                "ListenAddress 127.0.0.1",
                "HostKey %s" % self.host_key,
                "PidFile %s" % os.path.join(self.dir, "sshd.pid"),
                "AuthorizedKeysFile %s" % os.path.join(self.dir, "authorized_keys"),
                "AllowUsers %s" % self.user,
                "StrictModes no",          # the keys live in a /tmp directory
                "UsePAM no",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "X11Forwarding no",
                "AllowTcpForwarding no",
                "PrintMotd no",
                # in the session process: stall() and kill_sessions() reach it
                "Subsystem sftp internal-sftp",
                "MaxStartups 64",
                "LogLevel VERBOSE",
                ""]))
        return cfg

    def start(self):
        """Start sshd and wait until it answers; raise with its log if not."""
        self._keygen(self.host_key)
        self._keygen(self.user_key)
        shutil.copy(self.user_key + ".pub", os.path.join(self.dir, "authorized_keys"))
        with open(self.host_key + ".pub") as f:
            host_pub = " ".join(f.read().split()[:2])
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        last = ""
        for _ in range(5):
            self.port = free_port()
            with open(self.known_hosts, "w") as f:
                f.write("[127.0.0.1]:%d %s\n" % (self.port, host_pub))
            self._write_config()
            if self._launch():
                return
            last = self.read_log()
        raise RuntimeError("sshd did not start; its log:\n" + last)

    def _launch(self):
        """Run sshd on the config written; True once it answers."""
        cfg = os.path.join(self.dir, "sshd_config")
        self.proc = subprocess.Popen([SSHD, "-D", "-f", cfg, "-E", self.log],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        if self._wait_banner():
            return True
        self._kill_tree()
        return False

    def down(self):
        """The server goes away: sshd and every session killed, nothing
        listens on the port (a client's reconnect is refused)."""
        self._kill_tree()
        self.stalled = []

    def up(self):
        """The server comes back, on the same port with the same keys."""
        if not self._launch():
            raise RuntimeError("sshd did not come back; its log:\n" + self.read_log())

    def _wait_banner(self):
        """True once sshd accepts a connection and says SSH-2.0."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(64).startswith(b"SSH-2.0"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def read_log(self):
        return read_text(self.log)

    def sessions(self):
        """Pids of the connection processes (every process below the
        listener: the privileged monitor and the session with sftp)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return descendants(self.proc.pid)

    def kill_sessions(self):
        """Kill the server side of every connection (SIGKILL): the client
        sees the TCP connection close. Returns how many processes died."""
        pids = self.sessions()
        _signal_all(pids, signal.SIGCONT)
        _signal_all(pids, signal.SIGKILL)
        self.stalled = []
        return len(pids)

    def stall(self):
        """Freeze every connection (SIGSTOP): the client's requests get no
        answer; new connections still reach the listener."""
        self.stalled = self.sessions()
        _signal_all(self.stalled, signal.SIGSTOP)
        return len(self.stalled)

    def resume(self):
        """SIGCONT what stall() froze."""
        _signal_all(self.stalled, signal.SIGCONT)
        self.stalled = []

    def _kill_tree(self):
        if self.proc is None:
            return
        pids = descendants(self.proc.pid)
        _signal_all(pids, signal.SIGCONT)
        _signal_all(pids, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stop(self):
        """Kill sshd and every session; remove the keys. Idempotent."""
        self._kill_tree()
        self.stalled = []
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class SshfsMount:
    """sshfs SERVER:@remote on @mnt, in the foreground (a child of the test).

    Default options: reconnect, keep-alives every second (a dead or frozen
    server is noticed within ~3 s), batch mode, this server's key and
    known_hosts only. @opts: more -o options, ahead of those (e.g.
    "ServerAliveCountMax=10" replaces the 3)."""

    def __init__(self, server, remote, mnt, *opts):
        self.server = server
        self.remote = remote
        self.mnt = mnt
        # @opts first: ssh keeps the first value it is given for an option
        self.opts = list(opts) + [
            "reconnect", "ServerAliveInterval=1", "ServerAliveCountMax=3",
            "ConnectTimeout=5", "BatchMode=yes", "IdentitiesOnly=yes",
            "StrictHostKeyChecking=yes", "port=%d" % server.port,
            "IdentityFile=%s" % server.user_key,
            "UserKnownHostsFile=%s" % server.known_hosts]
        self.proc = None
        self.log = mnt.rstrip("/") + ".sshfs.log"
        atexit.register(self.unmount)

    def mount(self):
        """Mount and wait for it; raise with sshfs's output if it fails."""
        args = [SSHFS, "-f", "-F", "/dev/null"]
        for o in self.opts:
            args += ["-o", o]
        args += ["%s@127.0.0.1:%s" % (self.server.user, self.remote), self.mnt]
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=logf)
        deadline = time.monotonic() + START_TIMEOUT
        while not mounted(self.mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.read_log()
                self.unmount()
                raise RuntimeError("sshfs did not mount %s: %s\nsshd log:\n%s"
                                   % (self.mnt, out, self.server.read_log()))
            time.sleep(0.02)

    def read_log(self):
        return read_text(self.log)

    def unmount(self):
        """Lazy unmount and stop sshfs; never waits on a frozen server.
        Idempotent."""
        if mounted(self.mnt):
            faultlib.fusermount("-uz", self.mnt)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        try:
            os.unlink(self.log)
        except OSError:
            pass


class SshfsCase(faultlib.FaultCase):
    """A FaultCase whose class exports cls.export (a directory that
    prepare_export() fills, written to directly: the server's side) at
    cls.remote over sshfs, through cls.server. Skipped where sshd or sshfs
    is missing."""

    sshfs_opts = ()

    @classmethod
    def setUpClass(cls):
        why = skip_reason()
        if why:
            raise faultlib.unittest.SkipTest(why)
        super().setUpClass()

    @classmethod
    def prepare(cls):
        cls.export = os.path.join(cls.tmp, "export")
        os.mkdir(cls.export)
        cls.prepare_export()
        cls.server = SshServer(cls.tmp)
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()
        cls.remote = os.path.join(cls.tmp, "sshfs")
        os.mkdir(cls.remote)
        cls.sshfs = SshfsMount(cls.server, cls.export, cls.remote, *cls.sshfs_opts)
        cls.addClassCleanup(cls.sshfs.unmount)
        cls.sshfs.mount()

    @classmethod
    def prepare_export(cls):
        pass


def main():
    """faultlib.main(), but exit 77 with the reason where sshd or sshfs is
    missing (rather than skipping each class)."""
    why = skip_reason()
    if why:
        print("SKIP: " + why)
        return 77
    return faultlib.main()
