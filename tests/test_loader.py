"""The pool loader: upstream files load unchanged; bad input fails with file, pool and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from estate.config.diagnostics import ConfigError
from estate.config.loader import load_estate, load_pool
from tests.conftest import EXAMPLE_CONFIGS, FLASHINFER_CONFIGS, H100_POOL, MINIMAL_POOL, needs_shared, write_pool


@needs_shared
def test_the_eight_flashinfer_files_load_unchanged_but_for_two_graviton_types_ec2_does_not_have() -> None:
    with pytest.raises(ConfigError) as info:
        load_estate([FLASHINFER_CONFIGS])
    assert (info.value.pool, info.value.key) == ("cpu-arm64-ondemand", "runner_config.instance_types[3]")
    assert info.value.message.startswith("unknown EC2 instance type 'm7g.24xlarge'")
    estate = load_estate([FLASHINFER_CONFIGS], drop_unknown_types=True)  # as `simulate` reads them
    assert [w.message.split(" (")[0] for w in estate.warnings if "left out" in w.message] == [
        "unknown EC2 instance type 'm7g.24xlarge'",
        "unknown EC2 instance type 'm6g.24xlarge'",
    ] * 2
    assert [t.name for t in estate.pool("cpu-arm64-ondemand").instance_types] == ["r8g.16xlarge", "r7g.16xlarge", "r6g.16xlarge"]
    assert sorted(p.name for p in estate.pools) == [
        "cpu-arm64-ondemand",
        "cpu-arm64-spot",
        "cpu-x64-ondemand",
        "cpu-x64-spot",
        "gpu-g4dn-ondemand",
        "gpu-g4dn-spot",
        "gpu-g5-ondemand",
        "gpu-g5-spot",
    ]
    g5 = estate.pool("gpu-g5-spot")
    assert g5.capacity_type == "spot"
    assert g5.gpu_model is not None
    assert g5.gpu_model.label == "a10g"
    assert g5.base_labels == ("self-hosted", "linux", "x64", "gpu", "nvidia", "a10g", "sm86", "ampere", "spot")


@needs_shared
def test_flashinfer_security_opt_outs_are_reported_not_honoured() -> None:
    estate = load_estate([FLASHINFER_CONFIGS], drop_unknown_types=True)
    imds = [w for w in estate.warnings if w.key == "runner_config.runner_metadata_options.http_tokens"]
    assert len(imds) == 8
    assert all("IMDSv2 stays required" in w.message for w in imds)
    assert all(p.imdsv2_required for p in estate.pools)
    ephemeral = [w for w in estate.warnings if w.key == "runner_config.enable_ephemeral_runners"]
    assert len(ephemeral) == 8


@needs_shared
def test_keys_not_acted_on_are_listed_by_name() -> None:
    estate = load_estate([FLASHINFER_CONFIGS / "cpu-x64-spot.yaml"])
    listed = ", ".join(w.key or "" for w in estate.warnings)
    for key in (
        "runner_config.scale_down_schedule_expression",
        "runner_config.delay_webhook_event",
        "runner_config.userdata_template",
        "fifo",
    ):
        assert key in listed
    for acted_on in ("runner_config.idle_config", "runner_config.runners_maximum_count", "runner_config.minimum_running_time_in_minutes"):
        assert acted_on not in listed


def test_the_example_estate_is_complete() -> None:
    estate = load_estate([EXAMPLE_CONFIGS])
    kinds = {p.name: p.capacity_type for p in estate.pools}
    assert kinds == {
        "cpu-x64-spot": "spot",
        "cpu-x64-ondemand": "on-demand",
        "cpu-arm64-spot": "spot",
        "cpu-arm64-ondemand": "on-demand",
        "gpu-t4-spot": "spot",
        "gpu-t4-ondemand": "on-demand",
        "gpu-a10g-spot": "spot",
        "gpu-a10g-ondemand": "on-demand",
        "gpu-h100-cb": "capacity-block",
        "gpu-b200-cb": "capacity-block",
    }
    h100 = estate.pool("gpu-h100-cb")
    assert h100.slot_layout is not None
    assert h100.slot_layout.spec() == "1x4+4x1"
    assert {frozenset({"self-hosted", "linux", "x64", "gpu", "h100", "1gpu"}) <= s for s in h100.runner_label_sets} == {True, False}
    assert "sm75" in estate.pool("gpu-t4-spot").base_labels
    assert "sm86" in estate.pool("gpu-a10g-ondemand").base_labels
    # Our own estate asks for nothing it does not get: no security opt-out warnings.
    assert not [w for w in estate.warnings if "IMDS" in w.message or "not honoured" in w.message]


def _error(tmp_path: Path, text: str, name: str = "pool-a") -> ConfigError:
    path = write_pool(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_pool(path)
    err = info.value
    assert err.file == str(path)
    assert "\n" not in str(err)
    return err


def test_minimal_pool_loads(tmp_path: Path) -> None:
    pool, warnings = load_pool(write_pool(tmp_path, "pool-a", MINIMAL_POOL))
    assert pool.name == "pool-a"
    assert pool.capacity_type == "spot"  # upstream's default
    assert warnings == []  # every key it sets is acted on


def test_unknown_key_names_the_key(tmp_path: Path) -> None:
    err = _error(tmp_path, MINIMAL_POOL.replace("  runner_os: linux", "  runner_os: linux\n  instance_typez: [m5.large]"))
    assert (err.pool, err.key) == ("pool-a", "runner_config.instance_typez")
    assert err.message == "unknown key 'instance_typez' (did you mean 'instance_types'?)"


def test_a_misspelt_required_key_is_named_not_the_key_it_replaced(tmp_path: Path) -> None:
    """Issue 19.4: `runners_maximum_cout` was reported as "runners_maximum_count: required key is missing"."""
    err = _error(tmp_path, MINIMAL_POOL.replace("runners_maximum_count: 4", "runners_maximum_cout: 4"))
    assert err.key == "runner_config.runners_maximum_cout"
    assert err.message == "unknown key 'runners_maximum_cout' (did you mean 'runners_maximum_count'?)"


@pytest.mark.parametrize(
    ("text", "key", "guess"),
    [
        ("  runner_metadata_options: {http_tokns: required}\n", "runner_config.runner_metadata_options.http_tokns", "http_tokens"),
        ("  block_device_mappings: [{volume_sise: 40}]\n", "runner_config.block_device_mappings[0].volume_sise", "volume_size"),
        ("estate:\n  hard_limits: {max_instance: 3}\n", "estate.hard_limits.max_instance", "max_instances"),
    ],
)
def test_did_you_mean_looks_inside_nested_sections(tmp_path: Path, text: str, key: str, guess: str) -> None:
    err = _error(tmp_path, MINIMAL_POOL + text)
    assert (err.key, err.message) == (key, f"unknown key {key.rsplit('.', 1)[-1]!r} (did you mean {guess!r}?)")


def test_an_unknown_key_like_no_other_gets_no_guess(tmp_path: Path) -> None:
    err = _error(tmp_path, MINIMAL_POOL + "  zzz_qqq: 1\n")
    assert err.message == "unknown key 'zzz_qqq'"


def test_unknown_top_level_key(tmp_path: Path) -> None:
    err = _error(tmp_path, MINIMAL_POOL + "estates: {}\n")
    assert err.key == "estates"


def test_upstream_keys_take_what_terraform_converts(tmp_path: Path) -> None:
    """Issue 19.4: Terraform, which reads upstream's files, turns "50" into a number and "true" into a bool."""
    text = (
        MINIMAL_POOL.replace("runners_maximum_count: 4", 'runners_maximum_count: "50"')
        + '  minimum_running_time_in_minutes: "5"\n  enable_ssm_on_runners: "true"\n  instance_max_spot_price: 0.5\n'
        + '  block_device_mappings: [{volume_size: "40", iops: 3e3}]\n'
        + 'fifo: "false"\n'
    )
    pool, _ = load_pool(write_pool(tmp_path, "pool-a", text))
    rc = pool.runner
    assert (rc.runners_maximum_count, rc.minimum_running_time_in_minutes, rc.enable_ssm_on_runners) == (50, 5, True)
    assert rc.instance_max_spot_price == "0.5"
    assert (rc.block_device_mappings[0].volume_size, rc.block_device_mappings[0].iops) == (40, 3000)
    assert pool.spec.fifo is False


@pytest.mark.parametrize(
    ("value", "message"),
    [('"four"', "integer"), ('"4.5"', "integer"), ("true", "integer"), ('"-1"', "greater than or equal to 0")],
)
def test_what_terraform_would_not_convert_is_refused(tmp_path: Path, value: str, message: str) -> None:
    err = _error(tmp_path, MINIMAL_POOL.replace("runners_maximum_count: 4", f"runners_maximum_count: {value}"))
    assert err.key == "runner_config.runners_maximum_count"
    assert message in err.message


def test_our_own_keys_are_not_coerced(tmp_path: Path) -> None:
    """Terraform never reads `estate:`: its keys take their own types only."""
    err = _error(tmp_path, MINIMAL_POOL + 'estate:\n  hard_limits: {max_instances: "4"}\n')
    assert err.key == "estate.hard_limits.max_instances"
    assert "integer" in err.message
    err = _error(tmp_path, MINIMAL_POOL + '  enable_ssm_on_runners: "yes"\n')
    assert "boolean" in err.message


def test_negative_maximum(tmp_path: Path) -> None:
    err = _error(tmp_path, MINIMAL_POOL.replace("runners_maximum_count: 4", "runners_maximum_count: -1"))
    assert err.key == "runner_config.runners_maximum_count"
    assert "greater than or equal to 0" in err.message


def test_missing_required_key(tmp_path: Path) -> None:
    err = _error(tmp_path, MINIMAL_POOL.replace("  runners_maximum_count: 4\n", ""))
    assert (err.key, err.message) == ("runner_config.runners_maximum_count", "required key is missing")


def test_arm64_pool_with_an_x86_type(tmp_path: Path) -> None:
    text = MINIMAL_POOL.replace("runner_architecture: x64", "runner_architecture: arm64").replace(
        "[m7i.2xlarge]", "[m7g.2xlarge, m7i.2xlarge]"
    )
    err = _error(tmp_path, text.replace("linux, x64, cpu", "linux, arm64, cpu"))
    assert err.key == "runner_config.instance_types[1]"
    assert "m7i.2xlarge is an x64 type but runner_architecture is arm64" in err.message


def test_gpu_labels_on_a_cpu_pool(tmp_path: Path) -> None:
    err = _error(tmp_path, MINIMAL_POOL.replace("runner_extra_labels: [cpu]", "runner_extra_labels: [cpu, gpu]"))
    assert err.key == "runner_config.runner_extra_labels[1]"
    assert "no NVIDIA GPU" in err.message


def test_gpu_model_label_must_fit_the_instance_type(tmp_path: Path) -> None:
    text = MINIMAL_POOL.replace("[m7i.2xlarge]", "[g5.2xlarge]").replace(
        "runner_extra_labels: [cpu]", "runner_extra_labels: [cpu, gpu, h100]"
    )
    err = _error(tmp_path, text)
    assert "'h100' does not fit g5.2xlarge" in err.message


def test_slot_layout_needing_more_gpus_than_the_node(tmp_path: Path) -> None:
    err = _error(tmp_path, H100_POOL.replace("1x4+4x1", "2x4+4x1"))
    assert err.key == "estate.gpu_slots"
    assert "needs 12 GPUs but a node has 8" in err.message


def test_slot_layout_leaving_gpus_idle_is_a_warning(tmp_path: Path) -> None:
    _, warnings = load_pool(write_pool(tmp_path, "h100", H100_POOL.replace("1x4+4x1", "1x4+2x1")))
    assert any(w.key == "estate.gpu_slots" and "leaves 2 of 8" in w.message for w in warnings)


def test_slot_layouts_are_for_capacity_block_nodes_only(tmp_path: Path) -> None:
    text = MINIMAL_POOL.replace("[m7i.2xlarge]", "[g5.12xlarge]") + "estate:\n  gpu_slots: 4x1\n"
    err = _error(tmp_path, text)
    assert err.key == "estate.gpu_slots"
    assert "capacity-block nodes only" in err.message


def test_malformed_slot_layout(tmp_path: Path) -> None:
    err = _error(tmp_path, H100_POOL.replace("1x4+4x1", "four-by-one"))
    assert err.key == "estate.gpu_slots"


def test_matcher_outside_the_runner_labels(tmp_path: Path) -> None:
    err = _error(tmp_path, MINIMAL_POOL.replace("[self-hosted, linux, x64, cpu]", "[self-hosted, linux, x64, cpu, big]"))
    assert err.key == "matcherConfig.labelMatchers[0]"
    assert "big" in err.message
    assert "never be taken" in err.message


def test_unknown_instance_type(tmp_path: Path) -> None:
    err = _error(tmp_path, MINIMAL_POOL.replace("[m7i.2xlarge]", "[m7i.huge]"))
    assert err.key == "runner_config.instance_types[0]"


def test_unencrypted_disk_is_refused(tmp_path: Path) -> None:
    text = MINIMAL_POOL + "  block_device_mappings:\n    - {device_name: /dev/sda1, volume_size: 100, encrypted: false}\n"
    err = _error(tmp_path, text)
    assert err.key == "runner_config.block_device_mappings[0].encrypted"


def test_capacity_block_needs_a_source_of_capacity(tmp_path: Path) -> None:
    err = _error(tmp_path, H100_POOL.replace("reservation_ids: [cr-0123456789abcdef0]", "purchase: false"))
    assert err.key == "estate.capacity_block"
    assert "reservation_ids" in err.message


def test_capacity_block_purchase_needs_a_price_limit(tmp_path: Path) -> None:
    err = _error(tmp_path, H100_POOL.replace("reservation_ids: [cr-0123456789abcdef0]", "purchase: true"))
    assert "max_price_usd" in err.message


def test_capacity_block_pool_cannot_be_spot(tmp_path: Path) -> None:
    err = _error(tmp_path, H100_POOL.replace("runners_maximum_count: 2", "runners_maximum_count: 2\n  instance_target_capacity_type: spot"))
    assert err.key == "runner_config.instance_target_capacity_type"


def test_duplicate_yaml_key_is_an_error_not_last_wins(tmp_path: Path) -> None:
    err = _error(tmp_path, MINIMAL_POOL + "fifo: true\nfifo: false\n")
    assert "'fifo' is given twice" in err.message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    err = _error(tmp_path, MINIMAL_POOL + "  owners: [a  # b\n")
    assert err.message.startswith("line ")


def test_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    err = _error(tmp_path, "- just\n- a list\n")
    assert "mapping" in err.message


def test_pool_name_must_be_usable_in_resource_names(tmp_path: Path) -> None:
    err = _error(tmp_path, MINIMAL_POOL, name="GPU_Pool")
    assert "pool name" in err.message


def test_two_pools_with_the_same_name(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_pool(tmp_path / "a", "cpu", MINIMAL_POOL)
    second = write_pool(tmp_path / "b", "cpu", MINIMAL_POOL)
    with pytest.raises(ConfigError, match="two pools or queues have this name") as info:
        load_estate([first, second])
    assert info.value.file == str(second)


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no runner config files"):
        load_estate([tmp_path])


def test_imdsv1_needs_our_explicit_opt_out(tmp_path: Path) -> None:
    text = MINIMAL_POOL + "  runner_metadata_options: {http_tokens: optional}\nestate:\n  allow_imdsv1: true\n"
    pool, warnings = load_pool(write_pool(tmp_path, "legacy", text))
    assert not pool.imdsv2_required
    assert any(w.key == "estate.allow_imdsv1" and "security opt-out" in w.message for w in warnings)


def test_loose_matching_is_explained(tmp_path: Path) -> None:
    _, warnings = load_pool(write_pool(tmp_path, "loose", MINIMAL_POOL.replace("exactMatch: true", "exactMatch: false")))
    assert any(w.key == "matcherConfig.exactMatch" for w in warnings)


def test_comma_separated_labels_as_older_upstream_wrote_them(tmp_path: Path) -> None:
    pool, _ = load_pool(write_pool(tmp_path, "old", MINIMAL_POOL.replace("runner_extra_labels: [cpu]", 'runner_extra_labels: "cpu, big"')))
    assert pool.base_labels == ("self-hosted", "linux", "x64", "cpu", "big")


def test_older_ami_keys_are_read(tmp_path: Path) -> None:
    text = MINIMAL_POOL + '  ami_owners: ["099720109477"]\n  ami_filter: {name: ["ubuntu/*"]}\n'
    pool, _ = load_pool(write_pool(tmp_path, "old", text))
    assert pool.runner.ami_selection.owners == ["099720109477"]
    assert pool.runner.ami_selection.filter == {"name": ["ubuntu/*"]}


def test_capacity_block_settings_are_acted_on_without_warnings(tmp_path: Path) -> None:
    pool, warnings = load_pool(write_pool(tmp_path, "h100", H100_POOL))
    assert pool.capacity_type == "capacity-block"
    assert not [w for w in warnings if (w.key or "").startswith("estate.capacity_block")]


def test_renewing_a_block_needs_a_price_limit_and_a_length(tmp_path: Path) -> None:
    text = H100_POOL.replace("capacity_block:\n", "capacity_block:\n    renew: true\n")
    assert "renew: true" in text
    with pytest.raises(ConfigError, match=r"renew: true needs max_price_usd and duration_hours"):
        load_pool(write_pool(tmp_path, "h100", text))


def test_an_hourly_budget_needs_a_price_for_every_type(tmp_path: Path) -> None:
    budget = "estate:\n  hard_limits:\n    max_hourly_usd: 10\n"
    pool, _ = load_pool(write_pool(tmp_path, "pool-a", MINIMAL_POOL + budget))
    assert pool.spec.estate.hard_limits.max_hourly_usd == 10
    unpriced = MINIMAL_POOL.replace("[m7i.2xlarge]", "[m7i.2xlarge, m8i.2xlarge]") + budget  # m8i is newer than the shipped table
    err = _error(tmp_path, unpriced)
    assert err.key == "runner_config.instance_types[1]"
    assert err.message.startswith("max_hourly_usd needs a price for every type: no on-demand price for m8i.2xlarge in us-east-1")
    assert "python -m estate prices --refresh --region us-east-1" in err.message


def test_a_bad_idle_config_cron_is_refused_at_load_not_in_the_lambda(tmp_path: Path) -> None:
    err = _error(tmp_path, MINIMAL_POOL + "  idle_config:\n    - {cron: '* 25 * * *', idleCount: 1}\n")
    assert err.key == "runner_config.idle_config[0].cron"
    assert "0-23" in err.message


def test_an_unknown_time_zone_is_refused(tmp_path: Path) -> None:
    err = _error(tmp_path, MINIMAL_POOL + "  idle_config:\n    - {cron: '* * * * *', timeZone: Mars/Olympus, idleCount: 1}\n")
    assert err.key == "runner_config.idle_config[0].timeZone"


@pytest.mark.parametrize(
    ("expression", "complaint"),
    [("* 8 * * 1-5", "neither cron(...) nor rate(...)"), ("cron(0 8 * * 1 *)", "`?`"), ("cron(0 8 L * ? *)", "not supported")],
)
def test_a_bad_pool_config_schedule_is_refused(tmp_path: Path, expression: str, complaint: str) -> None:
    err = _error(tmp_path, MINIMAL_POOL + f"  pool_config:\n    - {{schedule_expression: '{expression}', size: 1}}\n")
    assert err.key == "runner_config.pool_config[0].schedule_expression"
    assert complaint in err.message


def test_pool_config_is_acted_on(tmp_path: Path) -> None:
    window = "{schedule_expression: 'cron(0 8 ? * MON-FRI *)', schedule_expression_timezone: Europe/Berlin, size: 2}"
    text = MINIMAL_POOL + f"  pool_config:\n    - {window}\n"
    _, warnings = load_pool(write_pool(tmp_path, "pooled", text))
    assert warnings == []


def test_host_reuse_is_an_explicit_opt_out_and_reported(tmp_path: Path) -> None:
    pool, warnings = load_pool(write_pool(tmp_path, "reusing", MINIMAL_POOL + "estate:\n  reuse_hosts:\n    max_jobs: 5\n"))
    assert pool.spec.estate.reuse_hosts is not None
    (warning,) = warnings
    assert warning.key == "estate.reuse_hosts"
    assert warning.message.startswith("security opt-out: a host runs up to 5 jobs")


def test_host_reuse_needs_at_least_two_jobs(tmp_path: Path) -> None:
    err = _error(tmp_path, MINIMAL_POOL + "estate:\n  reuse_hosts:\n    max_jobs: 1\n")
    assert err.key == "estate.reuse_hosts.max_jobs"


def test_capacity_block_nodes_do_not_take_host_reuse(tmp_path: Path) -> None:
    err = _error(tmp_path, H100_POOL + "  reuse_hosts:\n    max_jobs: 3\n", name="gpu-h100-cb")
    assert err.key == "estate.reuse_hosts"
