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
_UINT_MAX = 2**32 - 1
# nf_ct_alloc_hashtable refuses more slots than INT_MAX / sizeof(struct hlist_nulls_head)
_MAX_HASH_SLOTS = (2**31 - 1) // 8
_DIGITS = {8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


def kernel_uint(text: str) -> int | None:
    """
    The number ``kstrtouint(text, 0, ...)`` reads (lib/kstrtox.c), as both parameters are
    parsed (param_set_uint): an optional ``+``, then ``0x`` hex, ``0`` octal or decimal, one
    trailing newline at most, at most UINT_MAX. ``None`` where the kernel says EINVAL/ERANGE.
    """
    digits = text[:-1] if text.endswith("\n") else text
    digits = digits[1:] if digits.startswith("+") else digits
    base = 10
    if digits[:2].lower() == "0x" and digits[2:3] and digits[2] in _DIGITS[16]:
        base, digits = 16, digits[2:]
    elif digits.startswith("0"):
        base = 8
    if not digits or any(c not in _DIGITS[base] for c in digits):
        return None
    value = int(digits, base)
    return value if value <= _UINT_MAX else None


def _module_parameters(words: list[str]) -> tuple[dict[str, str | None], str | None]:
    """kmod passes the words after the module name to the kernel as they are."""
    parameters: dict[str, str | None] = {}
    refused = []  # what makes the kernel refuse the whole line
    twice = []
    for word in words:
        name, sep, value = word.partition("=")
        value = value.strip('"') if sep else None
        if not name:
            refused.append(f"'{word}' is not a parameter")
            continue
        if name in parameters and name in _NUMBER_PARAMETERS:
            twice.append(name)
        parameters[name] = value
        if name in _NUMBER_PARAMETERS and kernel_uint(value or "") is None:
            if value:
                refused.append(
                    f"{word!r} is not a number the kernel reads (kstrtouint: decimal, 0x hex or "
                    f"0 octal, at most {_UINT_MAX})"
                )
            else:
                refused.append(
                    f"'{name}' has no number" + (f" ({word!r})" if sep else " (no '=N' attached)")
                )
    if refused and any(w == "=" for w in words):
        refused.append("spaces around '=' split it into separate words")
    problems = []
    if refused:
        problems.append(
            "; ".join(refused)
            + ": the kernel refuses the option and nf_conntrack fails to load (EINVAL)"
        )
    number = kernel_uint(parameters.get("hashsize") or "")
    if number is not None and number > _MAX_HASH_SLOTS:
        problems.append(
            f"'hashsize={number}' is more buckets than the kernel allocates (nf_conntrack_core.c, "
            f"nf_ct_alloc_hashtable: at most INT_MAX / 8 = {_MAX_HASH_SLOTS} slots, UINT_MAX / 8 "
            "on kernels without that fix): nf_conntrack fails to load (ENOMEM)"
        )
    for name in dict.fromkeys(twice):
        problems.append(
            f"'{name}' is given twice: the second resizes a table that is not set up yet, "
            "which has crashed kernels (2045cdfa1b40)"
        )
    return parameters, "; ".join(problems) or None


def _install_parameters(words: list[str]) -> tuple[dict[str, str | None], str | None]:
    """
    The nf_conntrack parameters an ``install`` command passes itself, e.g. ``install
    nf_conntrack /sbin/modprobe --ignore-install nf_conntrack hashsize=131072 $CMDLINE_OPTS``:
    the ``NAME=VALUE`` words after the command's own ``nf_conntrack`` word.
    """
    module = [i for i, word in enumerate(words) if word.replace("-", "_") == "nf_conntrack"]
    if not module:
        return {}, None
    passed = [word for word in words[module[0] + 1 :] if "=" in word and word[0].isalpha()]
    passed = [word for word in passed if word.partition("=")[0] in _NUMBER_PARAMETERS]
    return _module_parameters(passed) if passed else ({}, None)


def modprobe_lines(text: str) -> list[ModprobeLine]:
    """
    ``options``/``install``/``remove``/``softdep`` lines for nf_conntrack from ``grep -H -n``
    over modprobe.d files, in any spelling kmod accepts (``nf-conntrack`` equals
    ``nf_conntrack``, modprobe.d(5)). An ``install`` line's parameters are those its command
    passes to nf_conntrack itself.
    """
    found = []
    for path, lineno, line in _grep_lines(text):
        words = line.split()
        if len(words) < 2 or words[0] not in ("options", "install", "remove", "softdep"):
            continue
        if words[1].replace("-", "_") != "nf_conntrack":
            continue
        if words[0] == "options":
            parameters, problem = _module_parameters(words[2:])
        elif words[0] == "install":
            parameters, problem = _install_parameters(words[2:])
        else:
            parameters, problem = {}, None
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
