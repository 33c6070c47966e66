"""The job's Python worker entry point (``facerec-flink-worker``,
udfs.flink_functions.python_worker_main): PyFlink starts it as ``python.executable``. Run
as a process, the way Flink runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jobs.recognition import python_worker_executable
from udfs.flink_functions import STATE_SAMPLER_PERIOD_MS

WORKER = Path(sys.executable).with_name("facerec-flink-worker")


def test_given_an_installed_project_then_the_job_runs_its_workers_through_the_entry_point():
    assert WORKER.is_file(), "`pip install -e .` installs the entry point beside python"
    assert python_worker_executable() == str(WORKER)


def test_given_a_module_to_run_then_it_runs_with_beams_state_sampler_on_a_short_period(
    tmp_path: Path,
):
    """What PyFlink runs (``-m pyflink.fn_execution.beam.beam_boot <args>``): the module as
    ``__main__`` with its arguments, and every state sampler Beam creates afterwards (one per
    bundle processor) samples every STATE_SAMPLER_PERIOD_MS, not Beam's 200 ms."""
    (tmp_path / "probe_worker.py").write_text(
        "import sys\n"
        "from apache_beam.runners.worker import statesampler\n"
        "from apache_beam.utils.counters import CounterFactory\n"
        "sampler = statesampler.StateSampler('step', CounterFactory())\n"
        "print(__name__, sys.argv[1:], sampler.sampling_period_ms)\n"
    )
    out = subprocess.run(
        [str(WORKER), "-m", "probe_worker", "--id=1", "--provision_endpoint=x"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.split() == [
        "__main__",
        "['--id=1',",
        "'--provision_endpoint=x']",
        str(STATE_SAMPLER_PERIOD_MS),
    ]


def test_given_any_other_command_line_then_it_is_the_interpreter_unchanged():
    out = subprocess.run(
        [str(WORKER), "-c", "import sys; print(sys.argv[1:])", "a", "-m"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "['a', '-m']"
