"""
conntune: size the conntrack table, set its timeouts, shape the uplink with CAKE.

    pyinfra INVENTORY deploy.py --dry --diff     # show every change, old → new; change nothing
    pyinfra INVENTORY deploy.py -y               # converge

Settings: inventories/group_data/all.py.
"""

from conntune.deploys.tune import tune

tune()
