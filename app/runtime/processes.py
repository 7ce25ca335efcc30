"""Child `python -m app <command>` processes: started with a log, stopped with SIGTERM, then SIGKILL."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp


@dataclass
class Child:
    """One `sluice <command>` child. Its output goes to `log` (appended), or to this process's own."""

    command: str
    env: Mapping[str, str]
    log: Path | None = None
    args: tuple[str, ...] = ()
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Child:
        # A session of its own: Ctrl-C in a terminal reaches the parent, which stops its children in order.
        command = [sys.executable, "-m", "app", self.command, *self.args]
        if self.log is None:
            self.process = subprocess.Popen(command, env=dict(self.env), cwd=self.cwd, start_new_session=True)
            return self
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, env=dict(self.env), cwd=self.cwd, stdout=out, stderr=out, start_new_session=True
            )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 40) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, and SIGKILL if it has not ended after `timeout` seconds; its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    async def stop_async(self, timeout: float = 30.0) -> int | None:
        """`stop` without blocking the event loop."""
        return await asyncio.to_thread(self.stop, timeout)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no flush, no commit."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    async def wait(self) -> int:
        """Its exit code, once it has ended (waited for in a thread, as Popen.wait blocks)."""
        if self.process is None:
            raise RuntimeError(f"sluice {self.command} was never started")
        return await asyncio.to_thread(self.process.wait)

    async def healthy(self, url: str, timeout: float = 60.0) -> None:
        """Wait until `url`/health answers 200; fail early, with the log, if the child dies."""
        await wait_for_health(url, self.running, self.log_tail, timeout)


async def wait_for_health(
    url: str, running: Callable[[], bool], log_tail: Callable[[], str], timeout: float = 60.0
) -> None:
    """Poll GET /health until it answers 200; fail early, with the log, if the process dies."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if not running():
                raise RuntimeError(f"process exited:\n{log_tail()}")
            try:
                async with http.get(url + "/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {timeout}s:\n{log_tail()}")
