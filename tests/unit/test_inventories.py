"""What ships in inventories/: documented settings equal the real ones and their defaults;
every SSH inventory checks host keys strictly."""

import runpy
from pathlib import Path

from conntune.settings import DEFAULTS, settings_from_data

INVENTORIES = Path(__file__).parent.parent.parent / "inventories"


def test_group_data_documents_every_setting_with_its_default():
    documented = {
        key: value
        for key, value in runpy.run_path(str(INVENTORIES / "group_data" / "all.py")).items()
        if not key.startswith("_")
    }
    assert documented == DEFAULTS
    settings_from_data(documented)  # and they validate


def test_every_ssh_inventory_checks_host_keys_strictly():
    for path in INVENTORIES.glob("*.py"):
        for name, group in runpy.run_path(str(path)).items():
            if name.startswith("_"):
                continue
            hosts, data = group if isinstance(group, tuple) else (group, {})
            for host in hosts:
                host_name, host_data = host if isinstance(host, tuple) else (host, {})
                if str(host_name).startswith("@"):
                    continue  # @local, @docker: no SSH
                merged = {**data, **host_data}
                assert merged.get("ssh_strict_host_key_checking") == "yes", (path, host_name)
                assert merged.get("ssh_known_hosts_file"), (path, host_name)


def test_the_readme_lists_every_setting():
    readme = (INVENTORIES.parent / "README.md").read_text()
    missing = [name for name in DEFAULTS if f"| `{name}` |" not in readme]
    assert missing == []
