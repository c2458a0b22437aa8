#!/usr/bin/python3
"""tools/kvm-lab as its users meet it: statuses, streams, bad input, and no
QEMU left behind on any way out. Cases that boot a lab take ~10 s each.

    tests/lab/kvm_lab_test.py [-k PATTERN]     (ctest label: lab)
"""

import importlib.machinery
import importlib.util
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import unittest.mock

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LAB = os.path.join(ROOT, "tools", "kvm-lab")


LAB_HANG = 120


def came_up(stderr):
    """True once the lab has started COMMAND ("kvm-lab: lab up in ..., running: ...")."""
    return any(line.startswith("kvm-lab: lab up in") for line in stderr.splitlines())


def lab(*args, env=None, timeout=600, **kw):
    # A lab whose own kernel stalls while it boots (TCG on a loaded machine,
    # before COMMAND starts) tells nothing about what a case checks: that
    # one boot is tried once more, as --retry-lab-hang would.
    for attempt in (1, 2):
        result = subprocess.run([LAB, *args], capture_output=True, text=True, timeout=timeout,
                                env=env, stdin=subprocess.DEVNULL, **kw)
        if attempt == 2 or result.returncode != LAB_HANG or came_up(result.stderr):
            return result
        print(f"kvm_lab_test: the lab did not come up, once more: {kvm_lab_lines(result.stderr)[-1:]}",
              file=sys.stderr)


def qemu_pid(stderr):
    m = re.search(r"QEMU pid (\d+)", stderr)
    return int(m.group(1)) if m else None


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def kvm_lab_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("kvm-lab: ")]


class BadUsage(unittest.TestCase):
    """Refused before anything starts: one line, status 125, 121 or 122."""

    def check(self, result, status, words):
        self.assertEqual(result.returncode, status, result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
        for w in words:
            self.assertIn(w, result.stderr)

    def test_no_command(self):
        self.check(lab(), 125, ["no COMMAND"])
        self.check(lab("--cpus", "2", "--"), 125, ["no COMMAND"])

    def test_unknown_option(self):
        self.check(lab("--frobnicate", "true"), 125, ["--frobnicate"])

    def test_bad_values(self):
        self.check(lab("--cpus", "many", "true"), 125, ["--cpus"])
        self.check(lab("--memory", "100", "true"), 125, ["--memory", "512"])
        self.check(lab("--timeout"), 125, ["--timeout needs a value"])
        self.check(lab("--rw", "/nonexistent/dir", "true"), 125, ["not a directory"])
        self.check(lab("--max-output", "lots", "true"), 125, ["--max-output"])
        self.check(lab("--retry-lab-hang=0", "true"), 125, ["--retry-lab-hang must be between 1 and 9"])
        self.check(lab("--retry-lab-hang=often", "true"), 125, ["--retry-lab-hang takes a whole number"])
        self.check(lab("--prefer-host=sometimes", "true"), 125, ["--prefer-host takes hardware or any"])

    def test_qemu_missing(self):
        env = dict(os.environ, PATH="/nonexistent")
        self.check(lab("true", env=env), 121, ["qemu-system-x86_64 is missing"])

    def test_kernel_package_missing(self):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, KVM_LAB_CACHE=cache, KVM_LAB_KERNEL_PACKAGE="linux-image-0.0.0-0-nonexistent")
            result = lab("--quiet", "true", env=env)
            self.assertEqual(result.returncode, 122, result.stderr)
            self.assertIn("linux-image-0.0.0-0-nonexistent", result.stderr)
            self.assertEqual(os.listdir(cache), [], "a failed fetch leaves nothing in the cache")


def load_kvm_lab():
    loader = importlib.machinery.SourceFileLoader("kvm_lab", LAB)
    spec = importlib.util.spec_from_loader("kvm_lab", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class WhichHostKvm(unittest.TestCase):
    """--prefer-host's decision, on a stand-in /dev/kvm and /proc/cpuinfo: a
    software-only /dev/kvm (PVM) is taken only when the caller said any."""

    @classmethod
    def setUpClass(cls):
        cls.kvm_lab = load_kvm_lab()

    def decide(self, flags, software_ok, api_version=12, device=True):
        real_open, real_os_open = open, os.open

        def fake_open(path, *args, **kwargs):
            if path == "/proc/cpuinfo":
                return io.StringIO(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
            return real_open(path, *args, **kwargs)

        def fake_os_open(path, flags_, *args):
            if path != "/dev/kvm":
                return real_os_open(path, flags_, *args)
            if not device:
                raise FileNotFoundError(2, "No such file or directory")
            return real_os_open(os.devnull, os.O_RDONLY)

        with unittest.mock.patch.object(self.kvm_lab, "open", fake_open, create=True), \
                unittest.mock.patch.object(self.kvm_lab.os, "open", fake_os_open), \
                unittest.mock.patch("fcntl.ioctl", lambda fd, request, arg: api_version):
            return self.kvm_lab.host_kvm_usable(software_ok=software_ok)

    def test_hardware_backed_is_taken_either_way(self):
        for flags in ("svm", "vmx"):
            for software_ok in (False, True):
                self.assertEqual(self.decide(flags, software_ok), (True, ""))

    def test_software_only_is_taken_only_when_asked(self):
        usable, why = self.decide("hypervisor", software_ok=False)
        self.assertFalse(usable)
        self.assertIn("software-only", why)
        usable, what = self.decide("hypervisor", software_ok=True)
        self.assertTrue(usable)
        self.assertIn("software-only PVM", what)

    def test_no_device_or_a_strange_one_is_never_taken(self):
        for software_ok in (False, True):
            self.assertEqual(self.decide("svm", software_ok, device=False), (False, "no usable /dev/kvm"))
            usable, why = self.decide("svm", software_ok, api_version=11)
            self.assertFalse(usable)
            self.assertIn("unknown API version", why)


class TroubleOnTheConsole(unittest.TestCase):
    """Which lab console lines end the lab as a lab death (retried), read from
    consoles of labs that died under the Linux suite."""

    @classmethod
    def setUpClass(cls):
        loader = importlib.machinery.SourceFileLoader("kvm_lab", LAB)
        spec = importlib.util.spec_from_loader("kvm_lab", loader)
        cls.kvm_lab = importlib.util.module_from_spec(spec)
        loader.exec_module(cls.kvm_lab)

    def test_first_sign_of_a_stack_overflow_is_trouble(self):
        for line in ("[   14.538328] BUG: TASK stack guard page was hit at 00000000ec6f87e0 "
                     "(stack is 00000000119f13d6..00000000a18c28d1)",
                     "[   14.540324] stack guard page: 0000 [#1] PREEMPT SMP NOPTI",
                     "[   80.913593] Thread overran stack, or stack corrupted",
                     "[   80.912948] BUG: unable to handle page fault for address: 000000010000012b",
                     "[  788.951801] Kernel panic - not syncing: corrupted stack end detected inside scheduler",
                     "[  120.000000] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [vcpu-0:211]",
                     "[  363.123456] INFO: task vcpu-1:4242 blocked for more than 120 seconds.",
                     "[   42.000000] kernel BUG at mm/slub.c:448!"):
            with self.subTest(line=line):
                self.assertRegex(line, self.kvm_lab.LAB_TROUBLE)

    def test_what_a_healthy_lab_prints_is_not(self):
        for line in ("[    7.715303] kvm [143]: vcpu0, guest rIP: 0xffffffff81073744 "
                     "Unhandled WRMSR(0xc0010007) = 0xffff",
                     "[    3.612303] SVM: kvm: Nested Paging enabled",
                     "[    2.880043] x86/mm: Checked W+X mappings: passed, no W+X pages found."):
            with self.subTest(line=line):
                self.assertNotRegex(line, self.kvm_lab.LAB_TROUBLE)


class InTheLab(unittest.TestCase):
    """Each case boots a lab."""

    def assert_no_qemu(self, stderr):
        pid = qemu_pid(stderr)
        self.assertIsNotNone(pid, f"kvm-lab did not report its QEMU pid:\n{stderr}")
        for _ in range(50):
            if not alive(pid):
                return
            time.sleep(0.1)
        self.fail(f"QEMU {pid} is still running after kvm-lab returned")

    def test_status_streams_environment_directory_and_shares(self):
        with tempfile.TemporaryDirectory() as rw, tempfile.TemporaryDirectory() as ro:
            script = (f"echo out; echo err >&2; echo \"var=$KVM_LAB_TEST_VAR\"; pwd; test -c /dev/kvm && echo kvm; "
                      f"echo kept > {rw}/result; echo lost > {ro}/scratch && echo wrote-ro; "
                      f"[ -t 1 ] || echo stdout-is-not-a-terminal; exit 7")
            env = dict(os.environ, KVM_LAB_TEST_VAR="a b'c")
            result = lab("--rw", rw, "--", "sh", "-c", script, env=env, cwd=ro)
            self.assertEqual(result.returncode, 7, result.stderr)
            out = result.stdout.splitlines()
            self.assertEqual(out, ["out", "var=a b'c", ro, "kvm", "wrote-ro", "stdout-is-not-a-terminal"],
                             result.stderr)
            self.assertIn("err", result.stderr.splitlines())
            self.assertNotIn("out", result.stderr.splitlines())
            with open(os.path.join(rw, "result")) as f:
                self.assertEqual(f.read(), "kept\n", "--rw writes reach the host")
            self.assertFalse(os.path.exists(os.path.join(ro, "scratch")), "everything else is thrown away")
            self.assert_no_qemu(result.stderr)

    def test_output_arrives_whole(self):
        with tempfile.TemporaryDirectory() as d:
            data = os.urandom(1 << 20)
            path = os.path.join(d, "blob")
            with open(path, "wb") as f:
                f.write(data)
            result = subprocess.run([LAB, "--", "cat", path], capture_output=True, timeout=600,
                                    stdin=subprocess.DEVNULL)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout, data, "1 MiB of binary output, byte for byte")

    def test_command_not_found(self):
        result = lab("--", "no-such-command-anywhere", "arg")
        self.assertEqual(result.returncode, 127, result.stderr)
        self.assertIn("no-such-command-anywhere: command not found inside the lab", result.stderr)

    def test_crash_is_reported(self):
        result = lab("--", "sh", "-c", "kill -SEGV $$")
        self.assertEqual(result.returncode, 128 + signal.SIGSEGV, result.stderr)
        self.assertIn("killed by SIGSEGV inside the lab", result.stderr)

    def test_timeout_stops_the_lab(self):
        start = time.monotonic()
        result = lab("--timeout", "25", "--", "sleep", "600")
        self.assertEqual(result.returncode, 124, result.stderr)
        self.assertLess(time.monotonic() - start, 60)
        self.assertIn("timed out after 25 s", result.stderr)
        self.assert_no_qemu(result.stderr)

    def test_flood_is_stopped(self):
        result = lab("--max-output", "4M", "--", "sh", "-c", "yes flood-flood-flood")
        self.assertEqual(result.returncode, 119, result.stderr[-2000:])
        self.assertIn("wrote more than 4194304 bytes", result.stderr)
        self.assert_no_qemu(result.stderr)

    def test_lab_kernel_panic_is_detected_and_retried_as_asked(self):
        result = lab("--retry-lab-hang=2", "--", "sh", "-c", "echo c > /proc/sysrq-trigger; sleep 600",
                     timeout=450)
        self.assertEqual(result.returncode, 120, result.stderr[-3000:])
        retries = [line for line in kvm_lab_lines(result.stderr) if "retrying in a fresh lab" in line]
        self.assertEqual(len(retries), 2, result.stderr[-3000:])
        self.assertIn("(1 of 2)", retries[0])
        self.assertIn("(2 of 2)", retries[1])
        # The first lab's panic must be recognised from its console. The fresh lab
        # panics the same way, but under load TCG can also freeze it while it boots;
        # either way it must end as a lab hang, which the status already says.
        self.assertIn("the lab kernel is in trouble", retries[0])
        self.assertIn("sysrq", retries[0].lower())
        last = kvm_lab_lines(result.stderr)[-1]
        self.assertRegex(last, r"the lab kernel is in trouble|the lab went silent")

    def test_signals_stop_the_lab(self):
        for sig, status in ((signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGKILL, None)):
            with self.subTest(signal=sig.name):
                for attempt in (1, 2):  # as lab(): a lab that stalls while booting gets one more boot
                    proc = subprocess.Popen([LAB, "--", "sleep", "600"], stderr=subprocess.PIPE, text=True,
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                    seen = ""
                    while not came_up(seen):
                        line = proc.stderr.readline()
                        if not line:
                            break
                        seen += line
                    if came_up(seen):
                        break
                    proc.stderr.close()
                    proc.wait(timeout=60)
                    self.assertTrue(attempt == 1 and proc.returncode == LAB_HANG,
                                    f"kvm-lab ended before the lab came up:\n{seen}")
                proc.send_signal(sig)
                rest = proc.stderr.read()
                proc.stderr.close()
                proc.wait(timeout=60)
                if status is not None:
                    self.assertEqual(proc.returncode, status, seen + rest)
                    self.assertIn("interrupted (SIGTERM)", rest)
                self.assert_no_qemu(seen)


if __name__ == "__main__":
    unittest.main(verbosity=2)
