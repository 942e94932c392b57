"""This machine, without SSH: ``pyinfra inventories/local.py deploy.py --dry --diff``."""

local = ["@local"]
