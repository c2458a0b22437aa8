#!/usr/bin/python3
"""tools/ctest-resumable: a run cut off mid-way (as when the lab's kernel dies
under a test) resumes with the tests that have no result, and a test that
failed before still fails the resumed run without running again, unless it
failed in the last minutes of a lab that then died: in the next lab
($KVM_LAB_ATTEMPT above 1) it runs once more, said as a lab event.

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

    def run_tool(self, *ctest_args, attempt=None):
        env = {k: v for k, v in os.environ.items() if k not in ("KVM_LAB_ATTEMPT", "VMM_LAB_EVENTS")}
        env["VMM_LAB_EVENTS"] = os.path.join(self.dir, "events")
        if attempt is not None:
            env["KVM_LAB_ATTEMPT"] = str(attempt)
        return subprocess.run([TOOL, self.progress, "--test-dir", self.dir, *ctest_args], capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL, env=env)

    def events(self):
        try:
            with open(os.path.join(self.dir, "events"), encoding="utf-8") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def fails_first_then_dies(self):
        """A suite whose Flaky fails its first run only, and whose Dies kills the run once, as a lab's death does."""
        write_suite(self.dir, [
            ("Flaky", f"echo Flaky >> {self.runs}; if [ ! -e {self.dir}/flaked ]; then touch {self.dir}/flaked; "
                      f"exit 1; fi"),
            ("Dies", f"echo Dies >> {self.runs}; if [ ! -e {self.dir}/died ]; then touch {self.dir}/died; "
                     f"kill -9 $(ps -o ppid= -p $PPID); sleep 5; fi"),
        ])

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

    def test_a_failure_just_before_the_lab_died_runs_once_more_in_the_next_lab(self):
        self.fails_first_then_dies()
        self.run_tool(attempt=1)
        resumed = self.run_tool(attempt=2)
        self.assertEqual(resumed.returncode, 0, resumed.stdout + resumed.stderr)
        self.assertEqual(self.ran(), ["Flaky", "Dies", "Flaky", "Dies"])
        self.assertEqual(len(self.events()), 1, self.events())
        self.assertIn("Flaky: failed 0 s before lab 1 died; run once more in lab 2", self.events()[0])
        self.assertIn("lab event: Flaky", resumed.stdout)

    def test_a_failure_resumed_outside_a_fresh_lab_is_not_rerun(self):
        self.fails_first_then_dies()
        self.run_tool()
        resumed = self.run_tool()  # no KVM_LAB_ATTEMPT: run by hand, not after a lab died
        self.assertEqual(resumed.returncode, 8, resumed.stdout + resumed.stderr)
        self.assertEqual(self.ran(), ["Flaky", "Dies", "Dies"])
        self.assertEqual(self.events(), [])

    def test_only_failures_near_the_labs_end_and_only_once_are_rerun(self):
        write_suite(self.dir, [(n, f"echo {n} >> {self.runs}; exit 1") for n in ("Early", "Late", "Again", "Next")])
        with open(self.progress, "w", encoding="utf-8") as f:
            # Lab 1: Early failed 301 s before its last sign of life, Late 300 s.
            # Again already had its rerun after an earlier lab death, and failed in it.
            f.write("run 1\nalive 1000\nfailed Early\nalive 1001\nfailed Late\nrerun Again\n"
                    "alive 1200\nfailed Again\nalive 1301\n")
        resumed = self.run_tool("-R", "Early|Late|Again", attempt=2)
        self.assertEqual(resumed.returncode, 8, resumed.stdout + resumed.stderr)
        self.assertEqual(self.ran(), ["Late"])
        self.assertEqual([e.split(":")[0] for e in self.events()], ["Late"])
        self.assertIn("not run again: Again, Early", resumed.stdout)
        # Late failed in its rerun: that stands, even after another lab death.
        again = self.run_tool("-R", "Early|Late|Again", attempt=3)
        self.assertEqual(again.returncode, 8, again.stdout + again.stderr)
        self.assertEqual(self.ran(), ["Late"])

    def test_a_rerun_the_next_lab_did_not_reach_is_still_run(self):
        write_suite(self.dir, [("Late", f"echo Late >> {self.runs}")])
        with open(self.progress, "w", encoding="utf-8") as f:
            f.write("run 1\nalive 1000\nfailed Late\nrun 2\nrerun Late\nalive 50\n")
        resumed = self.run_tool(attempt=3)
        self.assertEqual(resumed.returncode, 0, resumed.stdout + resumed.stderr)
        self.assertEqual(self.ran(), ["Late"])
        self.assertEqual(self.events(), [], "its rerun was announced in lab 2")

    def test_filters_still_apply_when_resuming(self):
        write_suite(self.dir, [(n, f"echo {n} >> {self.runs}") for n in ("KeepA", "KeepB", "Other")])
        with open(self.progress, "w", encoding="utf-8") as f:
            f.write("passed KeepA\n")
        resumed = self.run_tool("-R", "Keep", "-E", "Nothing")
        self.assertEqual(resumed.returncode, 0, resumed.stdout + resumed.stderr)
        self.assertEqual(self.ran(), ["KeepB"])


if __name__ == "__main__":
    unittest.main()
