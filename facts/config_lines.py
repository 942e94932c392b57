"""
Parsing other parties' configuration as ``grep -H -n`` prints it: the sysctl.d lines and the
modprobe.d lines that touch conntrack, in every spelling systemd-sysctl, procps and kmod accept.
"""

from __future__ import annotations

import re

from conntune.hostfacts import ModprobeLine, SysctlLine


def _grep_lines(text: str) -> list[tuple[str, int, str]]:
    """``grep -H -n`` output (``path:lineno:text``)."""
    found = []
    for line in text.splitlines():
        match = re.match(r"^(/[^:]*):(\d+):(.*)$", line)
        if match:
            found.append((match.group(1), int(match.group(2)), match.group(3).strip()))
    return found


# Legacy spellings of the conntrack knobs: the ip_conntrack module's net.ipv4.ip_conntrack_*
# (2.6.19 and older) and the compatibility net.ipv4.netfilter.ip_conntrack_* names of
# CONFIG_NF_CONNTRACK_PROC_COMPAT, and the net.nf_conntrack_max alias (init netns only;
# nf_conntrack_standalone.c, nf_ct_netfilter_table).
_LEGACY_PREFIXES = (
    ("net.ipv4.netfilter.ip_conntrack_", "net.netfilter.nf_conntrack_"),
    ("net.ipv4.ip_conntrack_", "net.netfilter.nf_conntrack_"),
    ("net.nf_conntrack_", "net.netfilter.nf_conntrack_"),
)


def canonical_sysctl_key(key: str) -> str:
    """
    The ``net.netfilter.nf_conntrack_*`` name a sysctl.d key sets, whatever its spelling:
    ``/`` or ``.`` separators (sysctl.d(5)), legacy names (above). Other keys are returned
    with their separators normalised.
    """
    key = key.strip().strip("/").replace("/", ".")
    for legacy, modern in _LEGACY_PREFIXES:
        if key.startswith(legacy):
            return modern + key[len(legacy) :]
    return key


def sysctl_lines(text: str) -> list[SysctlLine]:
    """
    Conntrack settings in sysctl.d files, from ``grep -H -n`` output over them. Accepts every
    form systemd-sysctl and procps read (sysctl.d(5)): a ``-`` prefix (errors ignored), ``/``
    separators, spaces or none around ``=``, globs; comments (``#``, ``;``) and lines that set
    no conntrack knob are dropped.
    """
    found = []
    for path, lineno, line in _grep_lines(text):
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        ignore_errors = key.startswith("-")
        name = key.lstrip("-").strip().strip("/").replace("/", ".")
        canonical = canonical_sysctl_key(name)
        if "conntrack" not in canonical and not any(c in canonical for c in "*?["):
            continue
        found.append(SysctlLine(path, lineno, line, canonical, value.strip(), ignore_errors, name))
    return found


# nf_conntrack's module parameters that take a number (nf_conntrack_core.c and
# nf_conntrack_expect.c: module_param_call(hashsize, ...), module_param_named(expect_hashsize,
# nf_ct_expect_hsize, uint, 0400)). A number parameter given without a value makes the module
# load fail with EINVAL (kernel/params.c, parse_one: "!val && !(ops->flags & NOARG)").
_NUMBER_PARAMETERS = ("hashsize", "expect_hashsize")


def _module_parameters(words: list[str]) -> tuple[dict[str, str | None], str | None]:
    """kmod passes the words after the module name to the kernel as they are."""
    parameters: dict[str, str | None] = {}
    problems = []
    for word in words:
        name, sep, value = word.partition("=")
        value = value.strip('"') if sep else None
        if not name:
            problems.append(f"'{word}' is not a parameter")
            continue
        parameters[name] = value
        if name in _NUMBER_PARAMETERS and not (value or "").isdigit():
            problems.append(
                f"'{name}' has no number" + (f" ({word!r})" if sep else " (no '=N' attached)")
            )
    if problems and any(w == "=" for w in words):
        problems.append("spaces around '=' split it into separate words")
    problem = None
    if problems:
        problem = (
            "; ".join(problems)
            + ": the kernel refuses the option and nf_conntrack fails to load (EINVAL)"
        )
    return parameters, problem


def modprobe_lines(text: str) -> list[ModprobeLine]:
    """
    ``options``/``install``/``remove``/``softdep`` lines for nf_conntrack from ``grep -H -n``
    over modprobe.d files, in any spelling kmod accepts (``nf-conntrack`` equals
    ``nf_conntrack``, modprobe.d(5)).
    """
    found = []
    for path, lineno, line in _grep_lines(text):
        words = line.split()
        if len(words) < 2 or words[0] not in ("options", "install", "remove", "softdep"):
            continue
        if words[1].replace("-", "_") != "nf_conntrack":
            continue
        parameters, problem = _module_parameters(words[2:]) if words[0] == "options" else ({}, None)
        found.append(ModprobeLine(path, lineno, line, words[0], parameters, problem))
    return found


def cmdline_module_options(text: str) -> list[ModprobeLine]:
    """``nf_conntrack.PARAM=VALUE`` words of /proc/cmdline (kmod applies them at load)."""
    words = [
        word.split(".", 1)[1]
        for word in text.split()
        if word.split(".", 1)[0].replace("-", "_") == "nf_conntrack" and "." in word
    ]
    if not words:
        return []
    parameters, problem = _module_parameters(words)
    return [ModprobeLine("/proc/cmdline", 1, " ".join(words), "cmdline", parameters, problem)]
