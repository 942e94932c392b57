"""
Neighbours: other parties that set the knobs conntune manages, and which of them wins.

- sysctl.d files: systemd-sysctl applies every ``*.conf`` of /etc/sysctl.d, /run/sysctl.d,
  /usr/local/lib/sysctl.d and /usr/lib/sysctl.d sorted by file name, a name in /etc masking the
  same name elsewhere (sysctl.d(5)); the last value written wins. /etc/sysctl.conf is read last
  (procps ``sysctl --system``; Debian links it as /etc/sysctl.d/99-sysctl.conf).
- kube-proxy and Cilium set the table size and some timeouts at runtime (kube-proxy
  pkg/proxy/conntrack): fighting them flaps forever.
- modprobe.d ``options nf_conntrack hashsize=`` lines, and ``nf_conntrack.hashsize=`` on the
  kernel command line: a second hashsize option has crashed kernels (2045cdfa1b40).
"""

from __future__ import annotations

import posixpath
from fnmatch import fnmatchcase

from conntune import paths, profiles
from conntune.hostfacts import BUCKETS_KEY, MAX_KEY, HostFacts, ModprobeLine, SysctlLine
from conntune.plan import Conflict

# What kube-proxy sets itself (pkg/proxy/conntrack): conntune does not fight over these
KUBE_PROXY_KEYS = (MAX_KEY, BUCKETS_KEY, *profiles.KUBE_PROXY)
_SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d",
                "/lib/sysctl.d")  # fmt: skip


def applied_after_ours(path: str) -> bool:
    """Whether systemd-sysctl applies ``path`` after conntune's file (it then wins at boot)."""
    if path == "/etc/sysctl.conf":
        return True
    return posixpath.basename(path) > posixpath.basename(paths.SYSCTL_FILE)


def _effective_lines(lines: list[SysctlLine]) -> list[SysctlLine]:
    """Drop lines of files masked by a same-named file in an earlier directory."""
    owner: dict[str, str] = {}
    for line in sorted(lines, key=lambda line: _dir_rank(line.path)):
        owner.setdefault(posixpath.basename(line.path), posixpath.dirname(line.path))
    return [
        line
        for line in lines
        if line.path == "/etc/sysctl.conf"
        or owner.get(posixpath.basename(line.path)) == posixpath.dirname(line.path)
    ]


def _dir_rank(path: str) -> int:
    directory = posixpath.dirname(path)
    return _SYSCTL_DIRS.index(directory) if directory in _SYSCTL_DIRS else len(_SYSCTL_DIRS)


def _boot_order(line: SysctlLine) -> tuple[int, str, int]:
    last = line.path == "/etc/sysctl.conf"
    return (int(last), posixpath.basename(line.path), line.lineno)


def takes_effect(facts: HostFacts, line: SysctlLine) -> bool:
    """
    Whether a line can set anything on this kernel: a legacy name (net.ipv4.netfilter.
    ip_conntrack_*, net.nf_conntrack_max) only where this kernel still registers it.
    """
    if line.name == line.key or any(c in line.name for c in "*?["):
        return True
    return line.name in facts.sysctls or not facts.conntrack_loaded


def legacy_lines_without_effect(facts: HostFacts) -> list[SysctlLine]:
    return [line for line in facts.sysctl_lines if not takes_effect(facts, line)]


def sysctl_file_owners(facts: HostFacts, keys: list[str]) -> dict[str, list[SysctlLine]]:
    """For each key, the lines of other sysctl files that set it, in the order they apply."""
    found: dict[str, list[SysctlLine]] = {}
    lines = sorted(_effective_lines(facts.sysctl_lines), key=_boot_order)
    for line in lines:
        if line.path == paths.SYSCTL_FILE or not takes_effect(facts, line):
            continue
        for key in keys:
            if line.key == key or fnmatchcase(key, line.key):
                found.setdefault(key, []).append(line)
    return found


def find(facts: HostFacts, keys: list[str], override: bool) -> dict[str, Conflict]:
    """
    The party that wins each managed key over conntune (``wins``), or that conntune overrides
    (``conntune_override_conflicts``). Keys nobody else sets are absent from the result.
    """
    result: dict[str, Conflict] = {}
    for key, lines in sysctl_file_owners(facts, keys).items():
        later = [line for line in lines if applied_after_ours(line.path)]
        if later:
            last = later[-1]
            owner = f"{last.path}:{last.lineno} ({last.text})"
            result[key] = Conflict(key, owner, last.value, wins=not override)
    for name, present in (("kube-proxy", facts.kube_proxy), ("Cilium", facts.cilium)):
        if present:
            for key in KUBE_PROXY_KEYS:
                if key in keys and key not in result:
                    result[key] = Conflict(key, f"{name} (sets it at runtime)", wins=not override)
    return result


def earlier_files(facts: HostFacts, keys: list[str]) -> list[SysctlLine]:
    """Lines of files applied before conntune's: conntune's value wins over them at boot."""
    return [
        line
        for lines in sysctl_file_owners(facts, keys).values()
        for line in lines
        if not applied_after_ours(line.path)
    ]


def foreign_hashsize(facts: HostFacts) -> list[ModprobeLine]:
    """Other module options that set nf_conntrack's hash size (any spelling, broken or not)."""
    return [
        line
        for line in facts.modprobe_lines
        if line.path != paths.MODPROBE_FILE and "hashsize" in line.parameters
    ]


def broken_module_options(facts: HostFacts) -> list[ModprobeLine]:
    """nf_conntrack options the kernel refuses: the module then fails to load at boot."""
    return [line for line in facts.modprobe_lines if line.problem]


def install_repeats_options(facts: HostFacts) -> list[ModprobeLine]:
    """
    ``install nf_conntrack`` commands that pass ``$CMDLINE_OPTS`` to a second modprobe (the
    Fedora/RHEL firewalld-sysctls.conf line). kmod gives the command every ``options`` value in
    ``$CMDLINE_OPTS``, and the second modprobe reads the ``options`` lines again and adds them
    (modprobe.d(5); libkmod-module.c, module_do_install_commands and module_options_concat):
    each ``options nf_conntrack hashsize=`` then reaches the kernel twice. Shown with this very
    line in the kmod patch "libkmod: introduce kmod_module_uniq_options()" (Wen Yang,
    linux-modules, 2020-04-29): ``insmod nf_conntrack.ko hashsize=187500 hashsize=187500``,
    the doubled parameter of 2045cdfa1b40's crash.
    """
    return [
        line
        for line in facts.modprobe_lines
        if line.directive == "install" and "$CMDLINE_OPTS" in line.text
    ]


def hashsize_doubled(facts: HostFacts) -> list[str]:
    """
    How the hash size reaches the kernel more than once at nf_conntrack's next load, one text
    per way (empty when it does not): kmod joins every ``options`` line for the module and the
    kernel command line's ``nf_conntrack.`` words into one parameter string (libkmod-module.c,
    kmod_module_get_options), an ``install`` command passes its own on top, and one passing
    ``$CMDLINE_OPTS`` makes them all reach it twice (``install_repeats_options``). A line that
    repeats ``hashsize`` itself is a broken line (``ModprobeLine.problem``) instead.
    """
    given = [
        line
        for line in facts.modprobe_lines
        if "hashsize" in line.parameters and line.directive in ("options", "cmdline", "install")
    ]
    doubled = []
    if len(given) > 1:
        doubled.append(
            "the hash size is set by " + " and ".join(map(str, given)) + ": kmod passes all of "
            "them at the next load"
        )
    passed = [line for line in given if line.directive != "install"]
    for install in install_repeats_options(facts) if passed else []:
        doubled.append(
            f"{install}: passes $CMDLINE_OPTS to a second modprobe that reads {passed[0]} again"
        )
    return doubled
