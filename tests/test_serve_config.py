"""The settings table: flags, TOML, env vars, precedence, unknown keys, --print-config."""

from __future__ import annotations

import argparse

import pytest

from edged.config import SETTINGS, Config, ConfigError, add_arguments, from_args, render, resolve


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_defaults_are_loopback():
    cfg = resolve({}, {})
    assert cfg == Config()
    assert cfg.ingest_endpoint == "tcp://127.0.0.1:5555" and cfg.publish_endpoint == "tcp://127.0.0.1:5556"
    assert cfg.metrics_listen.startswith("127.0.0.1:") and cfg.ingest_socket == "pull"


def test_precedence_flag_over_env_over_file(tmp_path):
    path = tmp_path / "edged.toml"
    path.write_text('[streams]\nmax = 10\nidle_timeout = 5\n[ingest]\nsocket = "sub"\nbind = false\n')
    env = {"EDGED_STREAMS_MAX": "20", "EDGED_CONFIG": str(path), "EDGED_UNRELATED": "x"}
    cfg = from_args(parse("--max-streams", "30"), env)
    assert (cfg.streams_max, cfg.streams_idle_timeout, cfg.ingest_socket, cfg.ingest_bind) == (30, 5.0, "sub", False)
    assert from_args(parse(), env).streams_max == 20
    assert from_args(parse("--config", str(path)), {}).streams_max == 10
    assert from_args(parse("--ingest-bind", "--config", str(path)), {}).ingest_bind is True


@pytest.mark.parametrize("toml,needle", [
    ("[streams]\nmaximum = 3\n", "unknown setting [streams] maximum"),
    ("[nope]\nx = 1\n", "unknown setting [nope] x"),
    ("top = 1\n", "must be a [table]"),
    ("[streams]\nmax = \"many\"\n", "not a valid int"),
    ("[streams]\nmax = 0\n", "out of range"),
    ("[ingest]\nsocket = \"router\"\n", "not one of"),
    ("[metrics]\nlisten = \"nonsense\"\n", "out of range"),
    ("[streams\n", "edged.toml"),
])
def test_bad_files_name_the_problem(tmp_path, toml, needle):
    path = tmp_path / "edged.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=None) as e:
        resolve({}, {}, str(path))
    assert needle in str(e.value)


@pytest.mark.parametrize("value, needle", [("x", "'x' is not N or N-M"), ("0-100000", "outside 0-"),
                                           ("1-0", "outside 0-")])
def test_bad_serve_cpus_name_the_problem(value, needle):
    with pytest.raises(ConfigError, match="--serve-cpus") as e:
        resolve({"service_cpus": value}, {})
    assert needle in str(e.value)
    assert resolve({"service_cpus": ""}, {}).service_cpus == ""


def test_a_cpu_that_cannot_be_pinned_names_the_setting():
    """``pin_serving_thread`` (in a thread of its own here) says which CPU it could not pin."""
    import threading

    from edged.service import pin_serving_thread

    said = []

    def pin():
        try:
            pin_serving_thread((1 << 20,), 0)
        except OSError as e:
            said.append(str(e))
    thread = threading.Thread(target=pin)
    thread.start()
    thread.join()
    assert said and "--serve-cpus: cannot pin the serving thread to CPU 1048576" in said[0]
    assert pin_serving_thread((), 3) is None


def test_bad_env_value_names_the_variable():
    with pytest.raises(ConfigError, match="EDGED_INGEST_BIND"):
        resolve({}, {"EDGED_INGEST_BIND": "perhaps"})


def test_render_round_trips_every_setting(tmp_path):
    cfg = resolve({"streams_max": 7, "metrics_listen": "off", "ingest_endpoint": 'tcp://"odd"'}, {})
    path = tmp_path / "out.toml"
    path.write_text(render(cfg))
    assert resolve({}, {}, str(path)) == cfg
    assert all(f"{s.key} = " in render(cfg) for s in SETTINGS)


def test_every_setting_has_flag_env_and_help():
    p = argparse.ArgumentParser()
    add_arguments(p)
    text = p.format_help()
    for s in SETTINGS:
        assert s.flag in text and s.env in text and s.help
