"""Service lifecycle pieces: sd_notify, the shipped systemd units, --version and --help."""

import socket
import subprocess
import sys
from pathlib import Path

from braid import __version__
from braid.daemon.common import sd_notify

ROOT = Path(__file__).resolve().parents[2]


def test_sd_notify_reaches_the_socket_systemd_names(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify("READY=1")
        assert sock.recv(64) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not sd_notify("READY=1")  # outside systemd: nothing


def test_the_units_run_the_daemons_as_notify_services():
    for unit, role in (("braid-gateway.service", "gateway"), ("braid-client@.service", "client")):
        text = (ROOT / "packaging" / "systemd" / unit).read_text()
        assert "Type=notify" in text and f"braid {role} -c /etc/braid/" in text
        assert "CapabilityBoundingSet=CAP_NET_ADMIN" in text


def test_version_and_help_for_each_subcommand():
    run = [sys.executable, "-m", "braid.cli.main"]
    out = subprocess.run([*run, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"braid {__version__}"
    for sub in (["client"], ["gateway"], ["status"], ["keygen"], ["lab", "site"]):
        help_text = subprocess.run([*run, *sub, "--help"], capture_output=True, text=True, check=True).stdout
        assert "usage: braid" in help_text and "-h, --help" in help_text
