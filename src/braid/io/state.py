"""What a client keeps across restarts and reboots, in one small JSON file per TUN and
network namespace (`/var/lib/braid/<tun>.<netns>.json`): the last handshake timestamp it
used (a clock set back must not make the gateway refuse it as a replay) and each metered
link's bytes this cap period. Written atomically (a temporary file, then rename)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .hostnet import netns_id

log = logging.getLogger("braid.state")

STATE_DIR = Path("/var/lib/braid")


class StateFile:
    def __init__(self, tun: str, state_dir: Path = STATE_DIR) -> None:
        self.path = state_dir / f"{tun}.{netns_id()}.json"
        self._told = False

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("state file %s unreadable (%s): starting from nothing", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, data: dict[str, Any]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._told:  # once: the daemon runs on without it
                log.warning("cannot write state file %s: %s", self.path, exc.strerror or exc)
                self._told = True
