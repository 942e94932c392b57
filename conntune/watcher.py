"""The watch loop's host side: one kept-open connection per host, one short command a sample."""

from __future__ import annotations

import time
from collections.abc import Callable

from conntune import pyinfra_api
from conntune.facts.reading import sample_command
from conntune.watch import HostView, Sample, parse_sample, view


class Watcher:
    def __init__(self, inventory: str, limit: list[str] | None = None, timeout: float = 3) -> None:
        self.inventory, self.limit, self.timeout = inventory, limit, timeout
        self.fleet: pyinfra_api.Fleet | None = None
        self.commands: dict[str, str] = {}
        self.first: dict[str, Sample] = {}
        self.previous: dict[str, Sample] = {}
        self.errors: dict[str, str] = {}
        self.sampled_at: float | None = None  # time.monotonic() of the last sample
        self.period_s: float | None = None  # between the last two samples: hosts set the pace

    def connect(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Open one connection per host; ``progress(done, total)`` as they come up."""
        self.fleet = pyinfra_api.open_fleet(self.inventory, limit=self.limit, progress=progress)
        self.errors = dict(self.fleet.errors)

    def start(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Read each host once for its egress NIC (CAKE interface or default route); sample."""
        if self.fleet is None:
            self.connect()
        assert self.fleet is not None
        hosts = {host.name: host for host in self.fleet.hosts}
        for name, facts in pyinfra_api.read_fleet(self.fleet, progress=progress).items():
            if isinstance(facts, str):
                self.errors[name] = facts
                continue
            iface = hosts[name].data.get("cake_interface") or facts.default_iface
            self.commands[name] = sample_command(iface)
        self.first = self._sample()
        self.previous = dict(self.first)

    def _sample(self) -> dict[str, Sample]:
        assert self.fleet is not None
        at = time.monotonic()
        self.period_s = None if self.sampled_at is None else at - self.sampled_at
        self.sampled_at = at
        samples = {}
        for name, result in pyinfra_api.run_on_hosts(
            self.fleet, self.commands, self.timeout
        ).items():
            if isinstance(result, Exception):
                self.errors[name] = f"stopped answering: {result}"
            else:
                samples[name] = parse_sample(result, at)
                self.errors.pop(name, None)
        return samples

    def step(self) -> list[HostView]:
        current = self._sample()
        views = []
        for name in set(self.commands) | set(self.errors):  # Screen orders them
            if name in current and name in self.previous:
                first = self.first.setdefault(name, self.previous[name])
                views.append(view(name, first, self.previous[name], current[name]))
            elif name in current:  # first answer after being stale: rates from the next one
                self.first.setdefault(name, current[name])
                views.append(HostView(host=name, stale=True, error="catching up"))
            else:
                views.append(HostView(host=name, stale=True, error=self.errors.get(name)))
        self.previous.update(current)
        return views

    def close(self) -> None:
        if self.fleet is not None:
            pyinfra_api.close_fleet(self.fleet)
