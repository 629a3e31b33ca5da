"""A real ``charrnn serve`` process on a free loopback port, for the integration and browser tests."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class LiveServer:
    """Starts ``charrnn serve --port 0 ARGS``, waits for its URL; ``stop()`` sends SIGINT and waits."""

    def __init__(self, *args, start_timeout: float = 120.0) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", "--host", "127.0.0.1", "--port", "0",
                                      *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + start_timeout
        self.url = None
        while self.url is None:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError("the server did not start:\n" + "\n".join(self.lines)) from None
            if line is None:
                raise RuntimeError("the server exited:\n" + "\n".join(self.lines))
            m = re.match(r"charrnn serve: (http://\S+?)/?$", line)
            if m:
                self.url = m.group(1)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def get(self, path: str, timeout: float = 30) -> dict | str:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            body = r.read().decode()
        return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one sample of the /metrics text (0 when absent)."""
        pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)$"
        for line in self.get("/metrics").splitlines():
            m = re.match(pattern, line)
            if m:
                return float(m.group(1))
        return 0.0

    def wait_for(self, check, timeout: float = 10.0, every: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(every)
        return False

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
