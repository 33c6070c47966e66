"""The one settings loader: defaults < YAML file < environment < command-line flags, every
source validated, and a data directory that does not depend on the current folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from facerec.config import Settings, default_data_dir, load_settings, with_overrides


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "facerec.yaml"
    path.write_text(
        "match:\n  threshold: 0.9\n  top_k: 7\njob:\n  parallelism: 3\n  batch:\n"
        "    max_frames: 8\n"
    )
    return path


def test_given_every_source_when_loading_then_file_env_and_flags_win_in_that_order(
    config_file, monkeypatch
):
    monkeypatch.setenv("FACEREC_MATCH__THRESHOLD", "0.95")
    monkeypatch.setenv("FACEREC_JOB__PARALLELISM", "4")
    s = load_settings(config_file, {"job": {"parallelism": 5}})
    assert s.match.threshold == 0.95  # environment beats the file
    assert s.match.top_k == 7  # the file beats the default, the env leaves it alone
    assert s.job.parallelism == 5  # the flag beats the environment
    assert s.job.batch.max_frames == 8  # nested sections merge key by key
    assert s.job.batch.max_wait_ms == Settings().job.batch.max_wait_ms


def test_given_a_flag_out_of_bounds_when_loading_then_refused_naming_the_field(config_file):
    with pytest.raises(ValidationError, match="job.parallelism"):
        load_settings(config_file, {"job": {"parallelism": 0}})
    # shedding with no floor can starve every camera for good (README: Overload)
    with pytest.raises(ValidationError, match="job.min_analysed_fps"):
        load_settings(config_file, {"job": {"min_analysed_fps": 0}})


def test_given_settings_when_overridden_then_validated_again_and_secrets_kept():
    base = Settings(api={"keys": [{"name": "ops", "key": "k" * 20, "role": "admin"}]})
    changed = with_overrides(base, {"job": {"checkpoint_interval_ms": 1000}})
    assert changed.job.checkpoint_interval_ms == 1000
    assert changed.api.keys[0].key.get_secret_value() == "k" * 20
    with pytest.raises(ValidationError, match="checkpoint_interval_ms"):
        with_overrides(base, {"job": {"checkpoint_interval_ms": 1}})


def test_given_no_data_dir_when_loading_then_per_user_dir_not_the_current_folder(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("FACEREC_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.data_dir == tmp_path / "xdg" / "facerec" == default_data_dir()
    assert s.data_dir.is_absolute()
    assert s.enrollment_url() == f"sqlite:///{tmp_path / 'xdg' / 'facerec' / 'enrollment.sqlite'}"


def test_given_a_missing_or_bad_file_when_loading_then_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_settings(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("match:\n  treshold: 1.0\n")
    with pytest.raises(ValidationError, match="treshold"):
        load_settings(typo)


def test_given_the_cli_when_a_flag_is_out_of_bounds_then_exit_2_with_the_field(tmp_path):
    from jobs.cli.main import app

    env = {"FACEREC_DATA_DIR": str(tmp_path), "FACEREC_CONFIG": ""}
    result = CliRunner().invoke(app, ["index", "gc", "--keep", "0"], env=env)
    assert result.exit_code == 2
    assert "index.keep" in result.output


def test_given_people_list_when_run_then_it_says_which_store_it_read(tmp_path):
    from jobs.cli.main import app

    env = {"FACEREC_DATA_DIR": str(tmp_path), "FACEREC_CONFIG": ""}
    result = CliRunner().invoke(app, ["people", "list"], env=env)
    assert result.exit_code == 0, result.output
    assert f"enrollment store: sqlite:///{tmp_path / 'enrollment.sqlite'}" in result.output
    assert "0 of 0" in result.output
