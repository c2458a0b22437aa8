#!/usr/bin/python3
"""tools/ctest-resumable: a run cut off mid-way (as when the lab's kernel dies
under a test) resumes with the tests that have no result, and a test that
failed before still fails the resumed run without running again.

    tests/lab/ctest_resumable_test.py        (ctest label: unit)
"""

import os
import subprocess
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOOL = os.path.join(ROOT, "tools", "ctest-resumable")


def write_suite(folder, tests):
    """A test folder ctest runs as is: one add_test per (name, shell script)."""
    with open(os.path.join(folder, "CTestTestfile.cmake"), "w", encoding="utf-8") as f:
        for name, script in tests:
            f.write(f'add_test([=[{name}]=] "sh" "-c" [=[{script}]=])\n')


class CtestResumable(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.progress = os.path.join(self.dir, "progress")
        self.runs = os.path.join(self.dir, "runs")

    def tearDown(self):
        self.tmp.cleanup()

    def run_tool(self, *ctest_args):
        return subprocess.run([TOOL, self.progress, "--test-dir", self.dir, *ctest_args], capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)

    def ran(self):
        with open(self.runs, encoding="utf-8") as f:
            return f.read().split()

    def test_a_cut_off_run_resumes_where_it_stopped(self):
        # "Dies" kills the whole tool from inside (its parent is ctest, whose
        # parent is the tool), as a lab dying takes everything in it.
        log = f"echo $0 >> {self.runs}"
        # $0 in `sh -c SCRIPT` is the first argument after the script: none,
        # so record the test by its own name instead.
        write_suite(self.dir, [(n, s.replace("$0", n.split("  #")[0].replace('"', ""))) for n, s in [
            ("First", log), ("Param/Test.Name/\"a.b\"", log), ("Param/Test.Name/c  # GetParam() = c", log),
            ("Dies", f"{log}; if [ ! -e {self.dir}/died ]; then touch {self.dir}/died; "
                     f"kill -9 $(ps -o ppid= -p $PPID); sleep 5; fi"),
            ("Last", log)]])
        cut = self.run_tool()
        self.assertEqual(cut.returncode, -9, cut.stdout + cut.stderr)
        self.assertEqual(self.ran(), ["First", "Param/Test.Name/a.b", "Param/Test.Name/c", "Dies"])

        resumed = self.run_tool()
        self.assertEqual(resumed.returncode, 0, resumed.stdout + resumed.stderr)
        self.assertIn("3 of 5 tests already have a result (0 failed); running the other 2", resumed.stdout)
        self.assertEqual(self.ran(), ["First", "Param/Test.Name/a.b", "Param/Test.Name/c", "Dies", "Dies", "Last"])

        again = self.run_tool()
        self.assertEqual(again.returncode, 0, again.stdout + again.stderr)
        self.assertIn("5 of 5 tests already have a result", again.stdout)
        self.assertEqual(len(self.ran()), 6, "a finished run runs nothing more")

    def test_a_failure_before_the_cut_fails_the_resumed_run_and_is_not_rerun(self):
        write_suite(self.dir, [
            ("Fails", f"echo Fails >> {self.runs}; exit 1"),
            ("Dies", f"echo Dies >> {self.runs}; if [ ! -e {self.dir}/died ]; then touch {self.dir}/died; "
                     f"kill -9 $(ps -o ppid= -p $PPID); sleep 5; fi"),
        ])
        self.run_tool()
        resumed = self.run_tool()
        self.assertEqual(resumed.returncode, 8, resumed.stdout + resumed.stderr)
        self.assertIn("failed in an earlier run, not run again: Fails", resumed.stdout)
        self.assertEqual(self.ran(), ["Fails", "Dies", "Dies"])

    def test_filters_still_apply_when_resuming(self):
        write_suite(self.dir, [(n, f"echo {n} >> {self.runs}") for n in ("KeepA", "KeepB", "Other")])
        with open(self.progress, "w", encoding="utf-8") as f:
            f.write("passed KeepA\n")
        resumed = self.run_tool("-R", "Keep", "-E", "Nothing")
        self.assertEqual(resumed.returncode, 0, resumed.stdout + resumed.stderr)
        self.assertEqual(self.ran(), ["KeepB"])


if __name__ == "__main__":
    unittest.main()
