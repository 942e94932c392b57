"""The watch loop's host side: one kept-open connection per host, one short command a sample."""

from __future__ import annotations

import time

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

    def start(self) -> None:
        """Connect, find each host's egress NIC (its CAKE interface or default route), sample."""
        self.fleet = pyinfra_api.open_fleet(self.inventory, limit=self.limit)
        self.errors = dict(self.fleet.errors)
        hosts = {host.name: host for host in self.fleet.hosts}
        for name, facts in pyinfra_api.read_fleet(self.fleet).items():
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
        for name in sorted(set(self.commands) | set(self.errors)):
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
