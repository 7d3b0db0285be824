"""Start the kit's processes on loopback and stop every one of them on any exit path (process groups)."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


class LaunchError(RuntimeError):
    """Raised when a service cannot start: a taken port, a crash, or no answer in time."""


@dataclass
class Service:
    """One child process: how to start it and where it answers."""

    name: str
    args: list[str]
    port: int | None = None
    health: str | None = None  # URL that answers 200 (and {"ok": true} for agents) once ready
    card: str | None = None  # an agent's card URL: ready only once peers can read it (issue #9)
    proc: subprocess.Popen | None = None
    log: Path | None = None


def port_free(host: str, port: int) -> bool:
    """Tell whether nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) != 0


@dataclass
class Supervisor:
    """Owns the children: starts them in their own process groups, stops them all at exit or on a signal."""

    env: dict[str, str]
    logs: Path
    token: str | None = None
    services: list[Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop()
        sys.exit(128 + signum)

    def start(self, svc: Service) -> Service:
        """Start one service after checking its port is free; its output goes to a log file."""
        if svc.port is not None and not port_free("127.0.0.1", svc.port):
            raise LaunchError(
                f"port {svc.port} for {svc.name} is already in use (another ragtune run?): stop that process, or "
                f"pick other ports with RAGTUNE_*_PORT variables (see .env.example)"
            )
        svc.log = self.logs / f"{svc.name}.log"
        out = svc.log.open("ab")
        svc.proc = subprocess.Popen(
            # The caller's cwd and the installed ragtune (-P: a same-named folder in that cwd never shadows it).
            [sys.executable, "-P", *svc.args],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.services.append(svc)
        return svc

    def wait_ready(self, svc: Service, timeout: float = 180.0) -> None:
        """Wait until the service's health URL answers, or raise with the tail of its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if svc.proc is not None and svc.proc.poll() is not None:
                raise LaunchError(f"{svc.name} exited with code {svc.proc.returncode}:\n{self.tail(svc)}")
            if svc.health is None or self.answers(svc):
                return
            time.sleep(0.3)
        raise LaunchError(f"{svc.name} did not become ready in {timeout:.0f} s:\n{self.tail(svc)}")

    @staticmethod
    def answers(svc: Service) -> bool:
        """Tell whether the service's health URL says ok and, for an agent, its card is served."""
        try:
            r = httpx.get(str(svc.health), timeout=2.0)
            if r.status_code != 200 or r.json().get("ok", True) is False:
                return False
            return svc.card is None or httpx.get(svc.card, timeout=2.0).status_code == 200
        except (httpx.HTTPError, ValueError):
            return False

    def tail(self, svc: Service, lines: int = 15) -> str:
        """Return the last lines of a service's log."""
        if svc.log is None or not svc.log.exists():
            return "(no log)"
        return "\n".join(svc.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 8.0) -> None:
        """Stop every started process group: SIGTERM, then SIGKILL for any still alive after `grace` seconds."""
        alive = [s.proc for s in reversed(self.services) if s.proc is not None and s.proc.poll() is None]
        for proc in alive:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in alive:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        for s in self.services:  # children of a child (e.g. the worker's trainer) share its group
            if s.proc is not None:
                _signal_group(s.proc, signal.SIGKILL)
        self.services.clear()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
