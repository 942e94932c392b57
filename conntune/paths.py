"""The files conntune owns on a host. It writes these and nothing else (firewalld's own
modprobe file is never edited: the package overwrites it on upgrade, docs/kernel-facts.md §1)."""

SYSCTL_FILE = "/etc/sysctl.d/90-conntune.conf"
MODPROBE_FILE = "/etc/modprobe.d/conntune.conf"
MODULES_LOAD_FILE = "/etc/modules-load.d/conntune.conf"
CAKE_UNIT = "conntune-cake.service"
CAKE_UNIT_FILE = f"/etc/systemd/system/{CAKE_UNIT}"
STATE_DIR = "/var/lib/conntune"
# The live values as they were before conntune first changed them, for `conntune revert`.
ORIGINAL_FILE = f"{STATE_DIR}/original.conf"

# The conntrack counters and the count of "table full" log lines when conntune last changed the
# live values: the audit tells drops since the fix from drops before it. Not a planned file: it
# is written with the live values and removed with the undo record.
COUNTERS_FILE = f"{STATE_DIR}/counters-at-change"

OWNED_FILES = (SYSCTL_FILE, MODPROBE_FILE, MODULES_LOAD_FILE, CAKE_UNIT_FILE, ORIGINAL_FILE)
