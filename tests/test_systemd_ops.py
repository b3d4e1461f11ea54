"""Operations assets under systemd/: the alert rules (promtool, where installed), the
Grafana dashboard (valid JSON, a datasource variable, only metrics edged exports) and a
real Prometheus server scraping edged on loopback and answering ``histogram_quantile``
over the latency histogram (skipped, saying why, without the ``prometheus`` package)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector

from conftest import small_model
from edged.metrics import Metrics, serve_http
from edged.model import load, save
from test_service import Served, events

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "systemd" / "edged.rules.yml"
DASHBOARD = ROOT / "systemd" / "edged.grafana.json"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


def exported_names() -> set[str]:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    Metrics(registry)
    names = set()
    for fam in registry.collect():
        names.add(fam.name)
        names |= {s.name for s in fam.samples}
    return names | {f"{n}_total" for n in names} | {f"{n}_bucket" for n in names} | {"up"}


def referenced(text: str) -> set[str]:
    return set(re.findall(r"\b(?:edged|process)_[a-z_]+\b", text)) | ({"up"} if "up{" in text else set())


def test_assets_reference_only_exported_metrics():
    names = exported_names()
    for path in (RULES, DASHBOARD):
        text = path.read_text()
        text = re.sub(r"edged:[a-z0-9_:]+", "", text)  # recording rule names
        text = re.sub(r"\$labels\.[a-z_]+|job=\"edged\"", "", text)
        missing = {n for n in referenced(text) if n not in names and not n.startswith("edged_overview")}
        assert not missing, f"{path.name}: {sorted(missing)}"


def test_dashboard_has_datasource_variable():
    d = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"]
    titles = " ".join(p["title"] for p in d["panels"])
    for word in ("latency", "Rejected", "Checkpoint", "Ready", "auth"):
        assert word.lower() in titles.lower()


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus): rules not checked")
def test_alert_rules_pass_promtool():
    r = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    for alert in ("EdgedLatencySLOBreach", "EdgedFramesRejected", "EdgedRestarting", "EdgedNotReady",
                  "EdgedCheckpointStale"):
        assert alert in RULES.read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(port: int, expr: str):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    except OSError:
        return None
    return body["data"]["result"] if body.get("status") == "success" else None


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus server not installed (apt-get install prometheus "
                    "in .ci/run enables this test)")
def test_prometheus_scrapes_edged_and_computes_p99(tmp_path):
    save(tmp_path / "m.npz", small_model(window=32, hop=8))
    model = load(tmp_path / "m.npz")
    served = Served(model, streams_max=4)
    http, metrics_port = serve_http(served.registry, "127.0.0.1", 0)
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{json.dumps(str(RULES))}]\n"
        "scrape_configs:\n"
        f"  - job_name: edged\n    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        expr = "histogram_quantile(0.99, sum by (le) (rate(edged_decision_latency_seconds_bucket[10s])))"
        deadline = time.monotonic() + 60
        k, result = 0, None
        while time.monotonic() < deadline:  # keep decisions flowing until Prometheus has a rate
            t, ch = events(k, 20, 8, model.n_in)
            served.tx.send("p", t + 8 * k, ch, until=8 * (k + 1))  # a decision every frame past 32
            k += 1
            result = query(port, expr)
            if result and result[0]["value"][1] not in ("NaN", "+Inf"):
                break
            time.sleep(0.1)  # pacing of the feed and the query, not a wait for one event
        assert result, "Prometheus never computed the p99"
        p99 = float(result[0]["value"][1])
        assert 0 < p99 <= 0.1
        assert served.value("edged_frames_rejected_total", reason="late") == 0
        assert query(port, 'up{job="edged"}')[0]["value"][1] == "1"
        rules = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5).read())
        assert rules["status"] == "success" and rules["data"]["groups"][0]["name"] == "edged"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        http.shutdown()
        http.server_close()
        served.close()
